#!/usr/bin/env bash
# deploy/prometheus checked with Prometheus's own tool (Debian's `prometheus` package):
#   - promtool check rules   infrachat-rules.yml (syntax, PromQL, templates)
#   - promtool test rules    tests/*.yml: every alert fires on synthetic series of an unhealthy
#                            target and stays silent on a healthy one
#   - promtool check config  prometheus.example.yml (and the rules it loads)
#   - every alert of the rules is exercised by a test, and has a section in docs/OPERATIONS.md
# No daemon, no database. Usage: prometheus_rules_test.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$root/deploy/prometheus
command -v promtool >/dev/null || { echo "FAIL: promtool is not installed (scripts/setup.sh installs prometheus)" >&2; exit 1; }

failed=0
run() {  # run WHAT COMMAND...
  local what=$1
  shift
  if out=$("$@" 2>&1); then
    echo "ok   $what"
  else
    echo "FAIL $what"
    printf '%s\n' "$out" | sed 's/^/       /'
    failed=$((failed + 1))
  fi
}

run "promtool check rules" promtool check rules "$dir/infrachat-rules.yml"
run "promtool test rules" promtool test rules "$dir"/tests/*.yml
run "promtool check config (example)" promtool check config "$dir/prometheus.example.yml"

alerts=$(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$dir/infrachat-rules.yml" | sort -u)
[ -n "$alerts" ] || { echo "FAIL: no alerts found in infrachat-rules.yml" >&2; exit 1; }
missing_tests="" missing_docs=""
for alert in $alerts; do
  grep -qs "alertname: $alert\$" "$dir"/tests/*.yml || missing_tests+=" $alert"
  grep -qs "^### $alert\$" "$root/docs/OPERATIONS.md" || missing_docs+=" $alert"
done
if [ -z "$missing_tests" ]; then echo "ok   every alert has a unit test"; else
  echo "FAIL alerts without a unit test:$missing_tests"; failed=$((failed + 1)); fi
if [ -z "$missing_docs" ]; then echo "ok   every alert has a section in docs/OPERATIONS.md"; else
  echo "FAIL alerts without a '### Name' section in docs/OPERATIONS.md:$missing_docs"; failed=$((failed + 1)); fi

[ "$failed" = 0 ]

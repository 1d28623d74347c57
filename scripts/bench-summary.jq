# Summary of a scripts/bench.sh results file (jq -rs: the whole file as one array of results):
# every result, then each InfraChat figure as a ratio to its ceiling and against the targets of
# issue 3.
def by($name): (map(select(.label == $name)) | last) // null;
def num(x): if x == null then "-" else (x * 100 | round / 100 | tostring) end;
def pad(n): tostring | if length >= n then . else . + (" " * (n - length)) end;
def lpad(n): tostring | if length >= n then . else (" " * (n - length)) + . end;
def ratio(a; b): if a == null or b == null or b.rate == 0 then null else a.rate / b.rate end;
def verdict(ok): if ok == null then "n/a" elif ok then "met" else "MISSED" end;

def per_cpu(x): if x == null or x.extra.per_server_cpu_s == null then null else x.extra.per_server_cpu_s end;
def cpu_ratio(a; b): if per_cpu(a) == null or per_cpu(b) == null then null else per_cpu(a) / per_cpu(b) end;

. as $all
| (["label", "rate", "unit", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "srv CPU s", "pg CPU s", "per srv CPU-s"]
   | "\(.[0] | pad(28))\(.[1] | lpad(14))  \(.[2] | pad(14))\(.[3] | lpad(9))\(.[4] | lpad(9))\(.[5] | lpad(10))\(.[6] | lpad(9))\(.[7] | lpad(10))\(.[8] | lpad(9))\(.[9] | lpad(14))"),
  ($all[]
   | "\(.label | pad(28))\(.rate | round | lpad(14))  \(.rate_unit | pad(14))\(num(.latency.p50) | lpad(9))\(num(.latency.p99) | lpad(9))\(num(.latency.p99_9) | lpad(10))\(num(.latency.max) | lpad(9))\(num(.extra.server_cpu_s) | lpad(10))\(num(.extra.pg_cpu_s) | lpad(9))\(if per_cpu(.) == null then "-" else per_cpu(.) | round end | lpad(14))"),
  "",
  "Ratios and targets (issue 3):",
  (by("durable-send") as $ds | by("pg-insert c1 b100") as $pg
   | ratio($ds; $pg) as $r
   | "  durable-send / raw PostgreSQL insert (1 conn, batch 100): \(num($r)) (target >= 0.40: \(verdict(if $r == null then null else $r >= 0.4 end)))"),
  (by("durable-send") as $ds
   | "  durable-send msg/s with 64 senders: \($ds.rate // 0 | round) (target >= 50000: \(verdict(if $ds == null then null else $ds.rate >= 50000 end)))"),
  (ratio(by("durable-send"); by("relay durable-send")) as $r
   | "  durable-send / raw gRPC relay send+ack: \(num($r))"),
  (by("durable-send half load") as $h
   | "  durable-send ACK p99 at half load: \(num($h.latency.p99)) ms (target < 20: \(verdict(if $h == null then null else $h.latency.p99 < 20 end)))"),
  (ratio(by("durable-send"); by("durable-send max_batch=1")) as $r
   | "  group commit speed-up (default / max_batch=1): \(num($r))x"),
  (by("fanout") as $f | ratio($f; by("relay fanout")) as $r
   | "  fanout / raw gRPC relay fanout: \(num($r)) (target >= 0.50: \(verdict(if $r == null then null else $r >= 0.5 end)))",
     "  fanout deliveries/s: \($f.rate // 0 | round) (target >= 200000 with 1000 subscribers: \(verdict(if $f == null then null else $f.rate >= 200000 end)))",
     "  fanout send-to-receive p99 at full load (closed loop): \(num($f.latency.p99)) ms"),
  (by("fanout half load") as $h
   | "  fanout send-to-receive p99 at half load: \(num($h.latency.p99)) ms (target < 50: \(verdict(if $h == null then null else $h.latency.p99 < 50 end)))"),
  (by("fanout mux100") as $m | ratio($m; by("relay fanout mux100")) as $r
   | "  fanout, 100 streams a connection: \($m.rate // 0 | round) deliveries/s, \(num($r)) of the relay's (target 200000: \(verdict(if $m == null then null else $m.rate >= 200000 end)))"),
  (by("connections") as $c
   | "  connections: \($c.count // 0) sessions, server RSS \(num($c.extra.server_rss_per_session_kib)) KiB per session (target < 50: \(verdict(if $c.extra.server_rss_per_session_kib == null then null else $c.extra.server_rss_per_session_kib < 50 end)))")
  ,
  (ratio(by("cluster durable-send"); by("durable-send")) as $r
   | if $r == null then empty else
       "  role-split durable-send / all-in-one: \(num($r)) (target >= 0.70: \(verdict($r >= 0.7)))" end),
  (ratio(by("cluster fanout"); by("fanout")) as $r
   | if $r == null then empty else
       "  role-split fanout / all-in-one: \(num($r)) (target >= 0.70: \(verdict($r >= 0.7)))" end),
  (ratio(by("ha durable-send"); by("durable-send")) as $r
   | if $r == null then empty else
       "  HA (synchronous standby) durable-send / single PostgreSQL: \(num($r)); ACK p99 \(num(by("ha durable-send").latency.p99)) ms vs \(num(by("durable-send").latency.p99)) ms" end),
  "",
  "Issue 9 (fanout per CPU, ACK tail; \"today\" = the figures of the issue, 2026-12-03):",
  (by("fanout") as $f
   | "  fanout deliveries per server CPU-second: \(if per_cpu($f) == null then "-" else per_cpu($f) | round end) (target >= 93000, 3x today's 31000: \(verdict(if per_cpu($f) == null then null else per_cpu($f) >= 93000 end)))",
     "  fanout deliveries/s: \($f.rate // 0 | round) (target >= 2.5x today's 32000-42500 on this machine, i.e. >= 106000: \(verdict(if $f == null then null else $f.rate >= 106000 end)))"),
  (cpu_ratio(by("fanout"); by("fanout no batches")) as $r
   | "  batches: fanout per CPU-second with / without: \(num($r))x"),
  (ratio(by("fanout"); by("shared relay fanout")) as $r | ratio(by("fanout"); by("relay fanout")) as $o
   | "  fanout / relay: \(num($r)) of the relay with the same techniques, \(num($o)) of the old relay"),
  (ratio(by("shared relay fanout"); by("relay fanout")) as $r
   | "  relay: shared frames and batches / one write per delivery: \(num($r))x"),
  (by("fanout 10x mux100") as $t
   | "  fanout to 10x the subscribers, 100 streams a connection: \($t.rate // 0 | round) deliveries/s, \(if per_cpu($t) == null then "-" else per_cpu($t) | round end) per server CPU-second"),
  (by("durable-send") as $ds | ratio($ds; by("pg-insert c1 b512")) as $r
   | "  durable-send / raw PostgreSQL insert (1 conn, batch 512): \(num($r)) (target >= 0.80: \(verdict(if $r == null then null else $r >= 0.8 end)))",
     "  durable-send ACKs per server CPU-second: \(if per_cpu($ds) == null then "-" else per_cpu($ds) | round end)"),
  (ratio(by("durable-send"); by("shared relay durable-send")) as $r | ratio(by("durable-send"); by("relay durable-send")) as $o
   | "  durable-send / relay: \(num($r)) of the relay with client batches, \(num($o)) of the old relay")

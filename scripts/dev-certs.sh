#!/usr/bin/env bash
# Makes a throwaway certificate authority and one certificate it signed, for trying and testing
# TLS (docs/CONFIG.md, "TLS"); never for production. Uses the openssl command line.
#   scripts/dev-certs.sh DIR [SANS]
#     DIR    gets ca.pem (the CA certificate: tls.internal.ca_file, infrachat --ca),
#            ca.key (its key, kept to sign more), cert.pem and key.pem (the certificate:
#            tls.internal.* and tls.public.*; usable as server and as client)
#     SANS   subjectAltName of cert.pem (default IP:127.0.0.1,DNS:localhost): the names
#            clients dial must be among them
# Keys are EC P-256, written mode 600; certificates are valid for 30 days.
set -euo pipefail
dir=${1:?usage: dev-certs.sh DIR [SANS]}
sans=${2:-IP:127.0.0.1,DNS:localhost}
command -v openssl >/dev/null || { echo "dev-certs: openssl is not installed (scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$dir"
umask 077
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=InfraChat throwaway CA" \
  -keyout "$dir/ca.key" -out "$dir/ca.pem" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  2>/dev/null
openssl req -new "${ec[@]}" -subj "/CN=infrachat" -keyout "$dir/key.pem" -out "$dir/cert.csr" \
  2>/dev/null
# The same certificate serves the internal listener and identifies this process as a client of
# other processes' internal listeners: both key usages.
printf '%s\n' "subjectAltName = $sans" "basicConstraints = critical, CA:FALSE" \
  "keyUsage = critical, digitalSignature" "extendedKeyUsage = serverAuth, clientAuth" \
  >"$dir/cert.ext"
openssl x509 -req -in "$dir/cert.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
  -set_serial "0x$(openssl rand -hex 16)" -days 30 -extfile "$dir/cert.ext" -out "$dir/cert.pem" \
  2>/dev/null
rm -f "$dir/cert.csr" "$dir/cert.ext"
chmod 644 "$dir/ca.pem" "$dir/cert.pem"

#!/bin/sh
# Certificates for the fake Kubernetes API server, made with the openssl CLI.
#
#   tests/k8s/gen_certs.sh OUTDIR
#
# OUTDIR gets (PEM, EC P-256 keys, valid 10 days):
#   ca.crt ca.key              the test CA
#   server.crt server.key      server cert for 127.0.0.1 and localhost (SAN IP and DNS)
#   named-server.crt named-server.key   server cert for the name kube.internal.test
#                              only (not the address it listens on: tls-server-name tests)
#   client.crt client.key      client cert CN=runbook-test, O=system:masters
#   other-ca.crt other-ca.key  an unrelated CA (TLS verification failure tests)
#   other-client.crt other-client.key   a client cert signed by the unrelated CA
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$1
mkdir -p "$out"
cd "$out"

key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# ca NAME SUBJECT
ca() {
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -sha256 -days 10 -subj "$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$1.crt" 2>/dev/null
}

# leaf NAME SUBJECT CA EXTFILE-CONTENT
leaf() {
    key "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$4" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial \
        -sha256 -days 10 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "/CN=runbook-test-ca"
ca other-ca "/CN=unrelated-test-ca"
leaf server "/CN=fake-kube-apiserver" ca \
"basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
leaf named-server "/CN=kube.internal.test" ca \
"basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:kube.internal.test"
leaf client "/O=system:masters/CN=runbook-test" ca \
"basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
leaf other-client "/O=system:masters/CN=intruder" other-ca \
"basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
rm -f ca.srl other-ca.srl
chmod 600 ./*.key

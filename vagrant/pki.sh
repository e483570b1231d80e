#!/usr/bin/env bash
# Makes the lab's etcd PKI into DIR (default target/vagrant/pki, synced to /cbrnet/pki in every
# VM), anew on every run, as kubeadm lays out its etcd's: a CA (ca.crt; its key stays here and is
# removed once it has signed), etcd's server certificate for node1's address (server.crt,
# server.key) and a client certificate per node (node1.crt ... node3.crt, with their keys),
# which etcd asks for (--client-cert-auth) and cbrnet-routed presents.
#   vagrant/pki.sh [DIR] [ETCD_IP] [NODES]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-$(cd "$here/.." && pwd)/target/vagrant/pki}
etcd_ip=${2:-192.168.56.11}
nodes=${3:-3}
command -v openssl >/dev/null || { echo "[pki] error: openssl is missing (apt-get install openssl)" >&2; exit 1; }

rm -rf "$dir"
mkdir -p "$dir"
chmod 0755 "$dir"
cd "$dir"
days=30
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key ca.key
openssl req -x509 -new -key ca.key -days "$days" -subj "/CN=cbrnet-lab-etcd-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt 2>/dev/null

# sign NAME CN EXTENSIONS: NAME.key and NAME.crt, signed by the CA.
sign() {
  local name=$1 cn=$2 ext=$3
  key "$name.key"
  openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
sign server etcd "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:$etcd_ip,IP:127.0.0.1,DNS:localhost"
for i in $(seq 1 "$nodes"); do
  sign "node$i" "node$i" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
done
# Nothing more is signed: the CA's key goes. The keys are read by rsync (as the host's user) and
# laid in place with 0600 by provision.sh.
rm -f ca.key ca.srl
chmod 0644 ./*.crt ./*.key
echo "[pki] $dir: ca.crt, server.crt, node1..node$nodes.crt (valid $days days)"

#!/bin/sh
# start-slapd.sh DIR PORT_LDAP PORT_LDAPS
# A throw-away OpenLDAP server (Debian slapd) for the directory sign-in tests: runs as the
# calling user with all state in DIR, on ldap://127.0.0.1:PORT_LDAP (StartTLS) and
# ldaps://127.0.0.1:PORT_LDAPS, with a test CA and server certificate made here
# (DIR/tls/ca.pem is what clients must trust), loaded with seed.ldif from this directory.
# slapd runs in the foreground (exec): the caller owns the process and waits for
# DIR/slapd.pid before connecting.
set -eu
[ $# -eq 3 ] || { echo "usage: $0 DIR PORT_LDAP PORT_LDAPS" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$1 PORT=$2 SPORT=$3
for b in /usr/sbin/slapd /usr/sbin/slapadd; do
  [ -x "$b" ] || { echo "$b missing: run installer/dev.sh deps" >&2; exit 1; }
done
mkdir -p "$DIR/db" "$DIR/tls"
DIR=$(cd "$DIR" && pwd) # slapd wants absolute paths

# Test certificates: rustls needs v3 extensions; the server certificate names the IP.
cd "$DIR/tls"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout ca.key -out ca.pem -days 30 -subj "/CN=Citadel Test Directory CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -out server.pem -days 30 -sha256 -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 600 server.key ca.key
cd "$DIR"

cat > "$DIR/slapd.conf" <<CONF
include  /etc/ldap/schema/core.schema
include  /etc/ldap/schema/cosine.schema
include  /etc/ldap/schema/inetorgperson.schema
include  /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile  $DIR/slapd.pid
argsfile $DIR/slapd.args
TLSCACertificateFile  $DIR/tls/ca.pem
TLSCertificateFile    $DIR/tls/server.pem
TLSCertificateKeyFile $DIR/tls/server.key
TLSVerifyClient never
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read

database mdb
maxsize  16777216
suffix   "dc=example,dc=org"
# The directory's own administrator (password admin-pass), for tests that change entries.
rootdn   "cn=admin,dc=example,dc=org"
rootpw   {SSHA}stz/7Ft0bKiJ3FndCHvjcMU6AnLrOUTl
directory $DIR/db
index objectClass eq
index uid,cn eq
index member eq
# Passwords: only usable to bind with. Everything else: readable by bound users.
access to attrs=userPassword
  by anonymous auth
  by * none
access to *
  by users read
  by * none
CONF

/usr/sbin/slapadd -q -f "$DIR/slapd.conf" -l "$HERE/seed.ldif" > "$DIR/slapadd.log" 2>&1 \
  || { cat "$DIR/slapadd.log" >&2; exit 1; }
exec /usr/sbin/slapd -h "ldap://127.0.0.1:$PORT/ ldaps://127.0.0.1:$SPORT/" \
  -f "$DIR/slapd.conf" -d none

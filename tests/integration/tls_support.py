"""Certificates for the TLS suites, made at test time with the openssl CLI
in a temporary directory: a CA, a server certificate for localhost and
127.0.0.1, a second server certificate (HUP rotation, SNI), a client
certificate signed by the CA, a self-signed stranger, and an encrypted key.
Plus helpers: ssl client contexts and a raw HTTPS request."""
import os
import socket
import ssl
import subprocess


def _ossl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def _leaf(d, name, cn, ca, san=None, client=False):
    _ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-subj",
          "/CN=%s/O=cgunicorn tests" % cn, "-out", name + ".csr", cwd=d)
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        if san:
            f.write("subjectAltName=%s\n" % san)
        f.write("extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
    _ossl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
          "-CAcreateserial", "-days", "2", "-sha256", "-extfile", name + ".ext",
          "-out", name + ".crt", cwd=d)


class Certs:
    def __init__(self, d):
        self.dir = d
        _ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
              "ca.crt", "-days", "2", "-subj", "/CN=cgunicorn test CA", cwd=d)
        _leaf(d, "server", "localhost", "ca", san="DNS:localhost,IP:127.0.0.1")
        _leaf(d, "server2", "other.test", "ca", san="DNS:other.test,DNS:localhost,IP:127.0.0.1")
        _leaf(d, "client", "test client", "ca", client=True)
        _ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "stranger.key",
              "-out", "stranger.crt", "-days", "2", "-subj", "/CN=stranger", cwd=d)
        _ossl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:s3cret", "-out",
              "server.enc.key", cwd=d)

    def path(self, name):
        return os.path.join(self.dir, name)

    def fingerprint(self, name):
        with open(self.path(name)) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        return der

    def server_args(self, extra=()):
        return ["--certfile", self.path("server.crt"), "--keyfile", self.path("server.key")] + \
            list(extra)

    def client_ctx(self, cert=None, maximum=None):
        ctx = ssl.create_default_context(cafile=self.path("ca.crt"))
        if cert:
            ctx.load_cert_chain(self.path(cert + ".crt"), self.path(cert + ".key"))
        if maximum is not None:
            ctx.maximum_version = maximum
        return ctx


def read_to_eof(s):
    """What the TLS socket s receives until the server closes (an alert
    or a reset ends it too)."""
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ssl.SSLError:
            break
        if not chunk:
            break
        data += chunk
    return data


def https_get(port, path="/", ctx=None, host="localhost", server_hostname=None, timeout=10,
              headers=(), body=b"", method="GET"):
    """One request over a new TLS connection; returns (status, headers dict, body, the
    server's certificate in DER)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s = ctx.wrap_socket(raw, server_hostname=server_hostname or host)
    try:
        head = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (method, path, host)
        for k, v in headers:
            head += "%s: %s\r\n" % (k, v)
        if body:
            head += "Content-Length: %d\r\n" % len(body)
        s.sendall(head.encode() + b"\r\n" + body)
        peer = s.getpeercert(binary_form=True)
        data = read_to_eof(s)
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest, peer

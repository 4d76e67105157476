#!/usr/bin/env python3
"""An HTTPS server that signs clients in with NTLM (RFC 4559), its acceptor pyspnego's
(an NTLM implementation written elsewhere): what a Lync Control Panel or remote
PowerShell URL does with Windows credentials.

Usage: ntlm_https_server.py PORT CERT KEY USERFILE   (prints READY when listening)
USERFILE: pyspnego's NTLM_USER_FILE, lines DOMAIN:USER:PASSWORD.

GET without Authorization: 401 offering Negotiate and NTLM. With `NTLM <NEGOTIATE>`:
401 with the CHALLENGE. With `NTLM <AUTHENTICATE>` on the same connection: 200 and
"signed in as DOMAIN\\user" when the password checks, 401 otherwise.
"""
import base64
import http.server
import os
import ssl
import sys

port, cert, key, userfile = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.environ["NTLM_USER_FILE"] = userfile
import spnego  # noqa: E402  (reads NTLM_USER_FILE)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, headers, body=b""):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        auth = self.headers.get("Authorization")
        if not auth or " " not in auth:
            return self.reply(401, [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")])
        _, token = auth.split(" ", 1)
        data = base64.b64decode(token)
        if len(data) > 8 and data[8] == 1:
            self.ctx = spnego.server(protocol="ntlm")
        try:
            out = self.ctx.step(data)
        except Exception:
            return self.reply(401, [("WWW-Authenticate", "NTLM")])
        if out:
            return self.reply(401, [("WWW-Authenticate", "NTLM " + base64.b64encode(out).decode())])
        if self.ctx.complete:
            return self.reply(200, [], ("signed in as " + str(self.ctx.client_principal)).encode())
        return self.reply(401, [("WWW-Authenticate", "NTLM")])


httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print("READY", flush=True)
httpd.serve_forever()

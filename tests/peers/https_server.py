"""A real HTTPS server for the http check tests: Python's http.server over TLS.

Usage: https_server.py PORT CERT KEY ROOT   (serves ROOT; prints READY when listening)

Two paths ask for credentials, as administration URLs do: /OcsPowershell answers 401
offering Negotiate and NTLM (a live Lync Front End), /basic answers 401 offering Basic.
"""
import functools
import http.server
import ssl
import sys

port, cert, key, root = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        schemes = {"/OcsPowershell": ["Negotiate", "NTLM"], "/basic": ['Basic realm="contoso"']}.get(self.path)
        if schemes is None:
            return super().do_GET()
        self.send_response(401)
        for s in schemes:
            self.send_header("WWW-Authenticate", s)
        self.send_header("Content-Length", "0")
        self.end_headers()


handler = functools.partial(Handler, directory=root)
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print("READY", flush=True)
httpd.serve_forever()

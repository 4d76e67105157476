"""A real HTTPS server for the http check tests: Python's http.server over TLS.

Usage: https_server.py PORT CERT KEY ROOT   (serves ROOT; prints READY when listening)
"""
import functools
import http.server
import ssl
import sys

port, cert, key, root = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print("READY", flush=True)
httpd.serve_forever()

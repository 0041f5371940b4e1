"""A real HTTP server on 127.0.0.1 serving a directory, with Range support,
a count of bytes sent, and an optional cut of the connection mid-file."""

import contextlib
import http.server
import os
import re
import threading


class _Handler(http.server.SimpleHTTPRequestHandler):
  server_version = "TestMirror/1.0"

  def log_message(self, *args):  # keep test output clean
    pass

  def do_GET(self):  # pylint: disable=invalid-name
    path = self.translate_path(self.path)
    if os.path.isdir(path):  # an index page listing the entries, like a mirror's
      listing = self.list_directory(path)
      if listing is not None:
        self.copyfile(listing, self.wfile)
      return None
    if not os.path.isfile(path):
      return self.send_error(404)
    size = os.path.getsize(path)
    start = 0
    match = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
    if match:
      start = int(match.group(1))
      if start >= size:
        return self.send_error(416)
      self.send_response(206)
      self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
    else:
      self.send_response(200)
    self.send_header("Content-Length", str(size - start))
    self.end_headers()
    limit = self.server.cut_after.pop(os.path.basename(path), None)
    with open(path, "rb") as f:
      f.seek(start)
      data = f.read() if limit is None else f.read(limit)
    # Counted before sending: the client may finish reading before write returns.
    self.server.bytes_sent += len(data)
    name = os.path.basename(path)
    self.server.sent_by_name[name] = self.server.sent_by_name.get(name, 0) + len(data)
    self.wfile.write(data)
    if limit is not None:
      self.close_connection = True


@contextlib.contextmanager
def serve(directory):
  """Yields the server; its .url is the base URL, .bytes_sent counts payload
  bytes (.sent_by_name per file name), and .cut_after[name] = n makes the next
  GET of `name` stop after n bytes."""
  handler = lambda *a, **kw: _Handler(*a, directory=str(directory), **kw)  # noqa: E731
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  server.bytes_sent, server.cut_after, server.sent_by_name = 0, {}, {}
  server.url = f"http://127.0.0.1:{server.server_address[1]}"
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield server
  finally:
    server.shutdown()
    server.server_close()

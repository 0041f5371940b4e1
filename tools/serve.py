"""Serve a raw-text classifier export over TensorFlow Serving's REST API.

  python tools/serve.py --model_dir=out/task/student_savedmodel --model_name=sst2
  curl -d '{"instances": ["a great film"]}' localhost:8501/v1/models/sst2:predict

--model_dir is an export of tools/export.py (a classifier given --input_dir),
or TF Serving's layout of one: `<dir>/<version>/saved_model.pb`, the highest
version served. Same endpoints and JSON as TF Serving (GET /v1/models/<name>,
/metadata, POST :predict with "instances" or "inputs"), plus /healthz, dynamic
batching and request limits. The server: modeling/serving/server.py.
"""

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from modeling.serving import server
from pipeline.core import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "The export, or a directory of numeric version "
                    "subdirectories holding exports.", required=True)
flags.DEFINE_string("model_name", "model", "The <name> in /v1/models/<name>.")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: all interfaces).")
flags.DEFINE_integer("port", 8501, "TCP port (8501 is TF Serving's REST port).")
flags.DEFINE_integer("max_batch_size", 32, "Most rows per model call; bigger requests "
                     "are split.")
flags.DEFINE_float("batch_timeout_ms", 0.0, "Longest a request waits for others to "
                   "share its model call (0: none; a batch is what queued while the last "
                   "model call ran).")
flags.DEFINE_integer("bucket_rows", 0, "A batch of at least twice this many rows runs as "
                     "calls of this many rows of similar length (each padded to its own "
                     "longest, not the batch's); 0: one call per batch.")
flags.DEFINE_integer("max_request_bytes", 1 << 20, "Larger request bodies get 413.")
flags.DEFINE_integer("max_instances", 256, "More instances per request get 400.")
flags.DEFINE_enum("http", "auto", server.HTTP_IMPLEMENTATIONS, "uvicorn's HTTP parser "
                  "(auto: httptools, the C one, when installed).")
flags.DEFINE_enum("loop", "auto", server.LOOPS, "uvicorn's event loop (auto: uvloop when "
                  "installed).")


def main(argv):
  del argv
  server.serve(server.ServeConfig(
      model_dir=FLAGS.model_dir, model_name=FLAGS.model_name, host=FLAGS.host,
      port=FLAGS.port, max_batch_size=FLAGS.max_batch_size,
      batch_timeout_ms=FLAGS.batch_timeout_ms, max_request_bytes=FLAGS.max_request_bytes,
      max_instances=FLAGS.max_instances, bucket_rows=FLAGS.bucket_rows, http=FLAGS.http,
      loop=FLAGS.loop))


if __name__ == "__main__":
  cli.run(main)

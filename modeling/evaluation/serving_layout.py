"""TensorFlow Serving's versioned model layout: `<base>/<version>/saved_model.pb`.

TF Serving and Triton load a model base directory whose numeric subdirectories
are versions and serve the highest. tools/serve.py accepts that layout or a
bare SavedModel directory (served as version 1, so clients always see a
version), so one export can be served here and by TF Serving as it is.
"""

import os

from pipeline.core.errors import ConfigError, InputError

SAVED_MODEL_FILE = "saved_model.pb"
BARE_VERSION = 1  # What a bare SavedModel directory is served as.


def versioned_export_dir(base, version):
  """`<base>/<version>`: where an export goes for TF Serving to find it."""
  if isinstance(version, bool) or not isinstance(version, int) or version < 1:
    raise ConfigError(f"a model version is a positive integer, not {version!r}")
  return os.path.join(base, str(version))


def is_saved_model(directory):
  return os.path.isfile(os.path.join(directory, SAVED_MODEL_FILE))


def versions(base):
  """{version: directory} of `base`'s numeric subdirectories holding a SavedModel."""
  found = {}
  for name in os.listdir(base):
    path = os.path.join(base, name)
    if name.isdigit() and int(name) > 0 and is_saved_model(path):
      found[int(name)] = path
  return found


def resolve_model_dir(model_dir):
  """(SavedModel directory, version) to serve for `model_dir`.

  Raises:
    InputError: model_dir is neither a SavedModel nor a directory of numeric
      version subdirectories with one.
  """
  if not os.path.isdir(model_dir):
    raise InputError(model_dir, "no such directory")
  if is_saved_model(model_dir):
    return model_dir, BARE_VERSION
  found = versions(model_dir)
  if not found:
    raise InputError(model_dir, f"neither a SavedModel ({SAVED_MODEL_FILE}) nor a "
                     "directory of numeric version subdirectories holding one")
  latest = max(found)
  return found[latest], latest

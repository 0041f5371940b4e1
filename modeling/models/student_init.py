"""Initialise a shallower student from a teacher's weights (DistilBERT-style).

Copies the embeddings, the pooler, the heads both models have (MLM transform,
LayerNorm and output bias; NSP; classifier) and a subset of encoder layers.
Only possible when the widths match; otherwise a ValueError lists every
mismatched variable and nothing is copied.
"""

import re

from modeling.checkpoints import name_map

_LAYER_NAME = re.compile(r"^bert/encoder/layer_(\d+)/")
_MAX_LISTED = 10


def default_layer_map(num_teacher_layers, num_student_layers):
  """Evenly spaced teacher layers, always keeping the first and the last.

  12 -> 6 gives (0, 2, 4, 7, 9, 11), the layers DistilBERT was initialised
  from; roughly "every other layer" for a half-depth student.
  """
  if num_student_layers > num_teacher_layers:
    raise ValueError(f"student has {num_student_layers} layers, more than "
                     f"the teacher's {num_teacher_layers}: pass a layer_map")
  if num_student_layers == 1:
    return (num_teacher_layers - 1,)
  step = (num_teacher_layers - 1) / (num_student_layers - 1)
  return tuple(int(round(i * step)) for i in range(num_student_layers))


def _teacher_name(student_name, layer_map):
  """bert/encoder/layer_<i>/... in the student -> layer_<map[i]> in teacher."""
  match = _LAYER_NAME.match(student_name)
  if not match:
    return student_name
  teacher_layer = layer_map[int(match.group(1))]
  return _LAYER_NAME.sub(f"bert/encoder/layer_{teacher_layer}/", student_name)


def _check_layer_map(layer_map, num_teacher, num_student):
  if len(layer_map) != num_student:
    raise ValueError(f"layer_map has {len(layer_map)} entries for a student "
                     f"with {num_student} layers")
  bad = [i for i in layer_map
         if isinstance(i, bool) or not isinstance(i, int) or
         not 0 <= i < num_teacher]
  if bad:
    raise ValueError(f"layer_map entries {bad} are not teacher layers "
                     f"0..{num_teacher - 1}")


def init_student_from_teacher(student, teacher, layer_map=None):
  """Copies teacher weights into `student` (either may have heads).

  Args:
    student: BertModel, BertPretrainer or BertClassifier.
    teacher: same kinds; only variables both models have are copied.
    layer_map: student layer i <- teacher layer layer_map[i]; defaults to
      default_layer_map().

  Returns:
    The Google-style names of the copied variables (student naming).

  Raises:
    ValueError: bad layer_map, or widths that differ (lists all mismatches).
  """
  student_vars = name_map.tf1_variable_map(student)
  teacher_vars = name_map.tf1_variable_map(teacher)
  num_student = _count_layers(student_vars)
  num_teacher = _count_layers(teacher_vars)
  if layer_map is None:
    layer_map = default_layer_map(num_teacher, num_student)
  layer_map = tuple(layer_map)
  _check_layer_map(layer_map, num_teacher, num_student)
  pairs, mismatched = [], []
  for name, variable in student_vars.items():
    source = teacher_vars.get(_teacher_name(name, layer_map))
    if source is None:
      continue  # A head the teacher does not have keeps its init.
    if tuple(source.shape) != tuple(variable.shape):
      mismatched.append(f"{name}: teacher {tuple(source.shape)} vs student "
                        f"{tuple(variable.shape)}")
    pairs.append((name, variable, source))
  if mismatched:
    raise ValueError("cannot initialise student from teacher, widths differ "
                     f"({len(mismatched)} variables): "
                     + "; ".join(mismatched[:_MAX_LISTED]))
  for _, variable, source in pairs:
    variable.assign(source.value)
  return [name for name, _, _ in pairs]


def _count_layers(variable_map):
  return len({m.group(1) for m in map(_LAYER_NAME.match, variable_map) if m})

"""Students (raw PCM in, log-mel front end inside), their parameter and MAC counts.

- `frontend`: the log-mel front end in plain torch ops (frozen DFT conv, mel matrix).
- `students`: `build_student(name, n_labels)` for wav2small, wav2tiny, cnn; `count_params`.
- `macs`: multiply-accumulates per window and per second of audio.
"""

from edgekd_train.models.macs import count_macs, macs_per_second, macs_per_window
from edgekd_train.models.students import STUDENT_NAMES, Student, build_student, count_params, student_config

__all__ = [
    "STUDENT_NAMES",
    "Student",
    "build_student",
    "count_macs",
    "count_params",
    "macs_per_second",
    "macs_per_window",
    "student_config",
]

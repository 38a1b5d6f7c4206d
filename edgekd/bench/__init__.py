"""`edgekd bench`: measure ONNX models on the device they will run on.

One module per concern: `measure` (interleaved timing), `memory` (peak RSS in a fresh process),
`graphcount` (params and MACs from the ONNX graph), `peak` (the core's measured GEMM peak),
`device` (facts about the machine), `results` (derived figures and ratios), `report` (the table),
`plot` (the PNG), `run` (one run, start to end) and `command` (the typer entry point).
"""

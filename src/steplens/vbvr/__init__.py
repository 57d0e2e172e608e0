"""The official VBVR-Bench path in one place: generation in the kit's layout (`run`), the scorers (`kit`: steplens' own
and the official VBVR-EvalKit), and a Wan model on VBVR-format samples end to end (`wan`). The folder formats are in
`steplens.tasks.vbvr`."""

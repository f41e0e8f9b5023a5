"""`cmcr demo`: the whole chain on two small synthetic worlds (docs/demo.md).

* `plan` — what decides the numbers (`DemoPlan`, `make_plan`) and the claim on the output folder;
* `stages` — the seven stages on the public workflows of `cmcr_core.runs`, resumable (`run_demo`);
* `report` — DIR/report.md and DIR/report.json, built only from the files the runs wrote.
"""

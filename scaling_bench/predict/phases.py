"""The phases of a training step that the memory prediction names its peaks after
(``predict.memory``), importable without torch: the report draws them from records."""

PHASES = ("forward", "backward", "optimizer")

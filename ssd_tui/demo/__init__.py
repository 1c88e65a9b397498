"""The demo: a problem family generated in code and a small code model pretrained on it.

- ``ssd_tui.demo.tasks``: the problem family (Python function tasks from (template,
  parameters) keys), the train / eval / pretraining split, the problem files and the
  pretraining corpus.
- ``ssd_tui.demo.pretrain``: builds the tokenizer and trains the model from scratch
  (``python -m ssd_tui.demo.pretrain --out assets/demo-model --seed 0``).
"""

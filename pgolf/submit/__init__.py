"""Submissions as the challenge counts them: one ``train_gpt.py`` generated from pgolf's training core.

bundle (the readable script from the core's modules, by AST), pack (minify, compress, base85, one-line
``exec`` loader), cache (the packed size per configuration: what ``code_bytes`` counts), record (the record
folder), entry (the script's ``main``), cli (``pgolf submit``). See docs/submit.md.
"""

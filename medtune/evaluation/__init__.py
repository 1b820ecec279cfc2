"""Evaluation of exported models on the paper's tasks (generation, parsing, scoring).

The scoring of NER, RE, NLI, document classification and QA arrives with the
evaluation issue; this package exists so the layout is stable.
"""

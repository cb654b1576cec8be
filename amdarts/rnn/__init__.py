"""Recurrent-cell search on word-level language modelling (Section 3.3, Table 4).

Modules:
  model: the DARTS recurrent cell (search and discrete) as pure functions, and its
    loss in the `hypergrad` convention.
  genotype: recurrent genotypes: derivation from α, JSON and DARTS strings.
  data: PTB-layout corpora, batching as DARTS, an offline corpus from `fortunes`.
  hparams: the PTB config read into model specs and step hyper-parameters.
  evaluation: perplexity over a split.
  search: `run(config, workdir)`, the architecture search (on `amdarts.loop`).
  train: `run(config, workdir)`, training and testing a genotype (on `amdarts.loop`).
"""

"""Recurrent-cell search and evaluation on Penn Treebank (Section 3.3, Table 4).

    python experiments/search.py --config=configs/ptb.py \
        --config.data.data_dir=/data/ptb --workdir=/tmp/ptb_search
    python experiments/train.py --config=configs/ptb.py \
        --config.data.data_dir=/data/ptb \
        --config.train.genotype=/tmp/ptb_search/genotype.json --workdir=/tmp/ptb_train

`data_dir` holds ptb.train.txt, ptb.valid.txt and ptb.test.txt (Mikolov's word-level
PTB, 10k vocabulary). The search follows the DARTS reference (rnn/train_search.py:
300 units, batch 256, SGD lr 20 with clip 0.25 on ω, Adam lr 3e-3 with L2 1e-3 on α,
α stepped on the PTB validation split) with the paper's two changes: the amended
gradient (eq. 5, η = 0.1) and one weight decay and one set of dropout rates for
search and evaluation (`reg`, used by both when `search.consistency`). Evaluation
trains the discrete cell with 850 units, batch 64, switching SGD to averaged SGD
when validation stops improving, for up to 8000 epochs (rnn/train.py); the best
validation snapshot is scored on test. The paper reports 57.1 validation / 54.8 test
perplexity (DARTS second order: 58.1 / 55.7), about 1 GPU-day of search.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 3  # Seeds init, α, dropout and data order (the paper's Figure 3 cell: seed 3).
  c.task = 'ptb'  # Selects amdarts.rnn in experiments/search.py and train.py.

  c.data = ml_collections.ConfigDict()
  c.data.name = 'ptb'  # 'ptb' (read data_dir) or 'fortunes' (offline Debian texts).
  c.data.data_dir = ''  # PTB-layout directory; 'fortunes': where to build it ('' = cache).
  c.data.fortunes_dir = '/usr/share/games/fortunes'  # From `apt-get install fortunes`.
  c.data.vocab_size = 10000  # Vocabulary kept when building 'fortunes' (PTB has 10k).
  c.data.max_train_tokens = 0  # Keep only the first N training tokens (0 = all).

  # The cell: DARTS's recurrent space.
  c.model = ml_collections.ConfigDict()
  c.model.steps = 8  # Intermediate nodes of the search cell (α has steps·(steps+1)/2 rows).
  c.model.ops = ('none', 'tanh', 'relu', 'sigmoid', 'identity')  # α's columns.
  c.model.nhid = 850  # Embedding = hidden size of the evaluation network.

  # Regularisers shared by search (with consistency) and evaluation (Section 3.3 (ii)).
  c.reg = ml_collections.ConfigDict()
  c.reg.w_wd = 8e-7  # L2 weight decay on ω (evaluation value of the reference).
  c.reg.dropout = 0.75  # Locked dropout on the cell outputs.
  c.reg.dropouth = 0.25  # Dropout on recurrent states entering W0 and W_i.
  c.reg.dropoutx = 0.75  # Dropout on the cell input x_t.
  c.reg.dropouti = 0.2  # Locked dropout on the embeddings.
  c.reg.dropoute = 0.0  # Word dropout on the embedding matrix (reference: 0 in both
  # train_search.py and train.py; 0.1 is only its model class's unused default).
  c.reg.ar = 0.0  # Activation regularisation on dropped outputs (reference: off).
  c.reg.tar = 1e-3  # Temporal activation regularisation (slowness) on raw outputs.

  c.search = ml_collections.ConfigDict()
  c.search.consistency = True  # Search with `reg`; False = DARTS's search values below.
  c.search.w_wd = 5e-7  # Weight decay without consistency (DARTS search).
  c.search.dropoute = 0.0  # Word dropout without consistency (DARTS search).
  c.search.nhid = 300  # Embedding = hidden size of the search network.
  c.search.epochs = 50  # The paper searches "till the architecture does not change".
  c.search.stop_after_unchanged = 0  # That rule: finish after K unchanged epochs (0 = off).
  c.search.batch_size = 256  # Columns of both the training and the α (validation) stream.
  c.search.bptt = 35  # Truncated-BPTT length (bptt/2 with probability half_bptt_prob).
  c.search.half_bptt_prob = 0.05  # Probability of a bptt/2 chunk (the reference's jitter).
  c.search.w_lr = 20.0  # Weights: plain SGD, lr scaled by seq_len/bptt each step.
  c.search.grad_clip = 0.25  # Global-norm clip of the weight gradient.
  c.search.estimator = 'amended_exact'  # See amdarts.hypergrad.ESTIMATORS.
  c.search.eta = 0.1  # Amending coefficient η (eq. 5).
  c.search.eps_scale = 0.01  # Finite differences: ε = eps_scale / ‖∇ω L_val‖.
  c.search.a_lr = 3e-3  # Architecture: Adam (reference: lr 3e-3, betas 0.9/0.999).
  c.search.a_b1 = 0.9  # Adam β1 on α.
  c.search.a_b2 = 0.999  # Adam β2 on α.
  c.search.a_wd = 1e-3  # L2 on α added to its gradient, as torch Adam's weight_decay.
  c.search.alpha_init_scale = 1e-3  # α ~ scale · N(0, 1) as DARTS.
  c.search.implicit_solver = 'cg'  # For estimator='implicit': 'cg' or 'neumann'.
  c.search.implicit_maxiter = 20  # CG iterations / Neumann terms.
  c.search.implicit_ridge = 1e-2  # Damping: (H + ridge·I)⁻¹.
  c.search.eval_batch_size = 10  # Columns for the per-epoch validation perplexity.

  c.train = ml_collections.ConfigDict()
  c.train.genotype = ''  # genotype.json / DARTS-string file, or a name (DARTS_V2).
  c.train.epochs = 8000  # Upper limit, as the reference ("until convergence").
  c.train.batch_size = 64  # Columns of the training stream.
  c.train.bptt = 35  # Base length; jittered by N(0, seq_len_std²), in [5, bptt + delta].
  c.train.half_bptt_prob = 0.05  # Probability of a bptt/2 base length.
  c.train.seq_len_std = 5.0  # Std of the jitter added to the base length.
  c.train.max_seq_len_delta = 20  # Chunks are at most bptt + this long.
  c.train.seq_len_bucket = 5  # Chunks pad to a multiple of this: ≤ (bptt+delta)/bucket compiles.
  c.train.w_lr = 20.0  # SGD, lr scaled by seq_len/bptt; the same lr after the ASGD switch.
  c.train.grad_clip = 0.25  # Global-norm clip of the weight gradient.
  c.train.nonmono = 5  # Average iterates once val loss > the best before the last `nonmono` epochs.
  c.train.eval_batch_size = 10  # Columns for the per-epoch validation perplexity.
  c.train.test_batch_size = 1  # Columns for the final test perplexity (the reference's 1).

  # The run loop (amdarts.loop), shared by every task.
  c.log_every_steps = 50  # Record train metrics every N steps (and at epoch ends).
  c.checkpoint_every_steps = 500  # Also at every epoch end; 0 = only there.
  c.keep_checkpoints = 2  # Newest checkpoints kept in <workdir>/checkpoints.
  return c

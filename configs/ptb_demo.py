"""A few-minute offline demonstration of the PTB pipeline on 2 CPU cores.

    apt-get install fortunes        # English fortune-cookie texts, ~0.4M words
    python experiments/search.py --config=configs/ptb_demo.py --workdir=/tmp/ptb_demo
    python experiments/train.py --config=configs/ptb_demo.py \
        --config.train.genotype=/tmp/ptb_demo/genotype.json --workdir=/tmp/ptb_demo_train

The corpus is built once, on first use, into the user's cache
(`~/.cache/amdarts/fortunes_ptb_v10000_*`, or `$AMDARTS_CACHE`; search and training
share it) in PTB's layout and preprocessing (10k vocabulary, <unk>, N for numbers;
see amdarts.rnn.data). The
model is tiny (16 search units, 32 evaluation units) and sees the first 60k
training tokens, so perplexities stay far above PTB's ~55; what the demo shows is
the whole pipeline (amended gradient, checkpoints, genotype files, evaluation) end
to end. Measured on 2 CPU cores: the search takes 3 min 20 s (about 20 s of it
compilation), validation perplexity 796 → 626 → 573 over the 3 epochs (~10^4 at
initialisation); training its cell for 3 epochs takes 40 s and reports 341
validation / 344 test perplexity.
"""

from configs import ptb


def get_config():
  c = ptb.get_config()
  c.seed = 0
  c.data.name = 'fortunes'
  c.data.max_train_tokens = 60000  # About 1/6 of the fortunes training split.

  # Lighter regularisation suits a 16-unit model better than DARTS's 0.75 dropouts;
  # still shared by search and evaluation.
  c.reg.dropout = 0.1
  c.reg.dropoutx = 0.1
  c.reg.dropouth = 0.05
  c.reg.dropouti = 0.05
  c.reg.dropoute = 0.0

  c.search.nhid = 16
  c.search.epochs = 3
  c.search.batch_size = 32
  c.search.bptt = 20
  c.search.eval_batch_size = 32

  c.model.nhid = 32
  c.train.epochs = 3
  c.train.batch_size = 32
  c.train.bptt = 20
  c.train.max_seq_len_delta = 10
  c.train.seq_len_bucket = 10  # At most 3 compiled lengths.
  c.train.eval_batch_size = 32
  c.train.test_batch_size = 32

  c.log_every_steps = 20
  c.checkpoint_every_steps = 50
  return c

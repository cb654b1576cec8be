"""Word-level language-model data in the Penn Treebank layout, batched as DARTS does.

A corpus directory holds `ptb.train.txt`, `ptb.valid.txt` and `ptb.test.txt` (or
`train.txt`, ... as in the DARTS reference): one sentence per line, words split by
spaces, rare words already `<unk>`. Every line gets an `<eos>`; the vocabulary is
the training words in order of first appearance (valid/test words outside it map
to `<unk>`). `batchify` lays a split out as B columns, f[N, B], read in chunks of
consecutive rows (truncated BPTT), so a column is one long stream and the hidden
state carries from chunk to chunk.

PTB itself cannot be downloaded here. For an offline demonstration,
`make_fortunes_corpus` turns the English fortune-cookie texts of the Debian package
`fortunes` (`apt-get install fortunes`, files in /usr/share/games/fortunes) into
the same three files with PTB's preprocessing (lower case, punctuation dropped,
contractions split, numbers as N, all but the most frequent words `<unk>`):

    python -m amdarts.rnn.data --fortunes /tmp/fortunes_ptb
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import re
from typing import Iterable, NamedTuple, Sequence

import flax
import numpy as np

import amdarts

SPLITS = ('train', 'valid', 'test')
EOS, UNK = '<eos>', '<unk>'
FORTUNES_DIR = '/usr/share/games/fortunes'
# Fortune files that are pictures rather than prose.
_FORTUNE_SKIP = frozenset({'ascii-art'})

PTB_HINT = ('need ptb.train.txt, ptb.valid.txt and ptb.test.txt (word-level Penn Treebank, '
            'e.g. simple-examples/data of Mikolov et al.); for an offline demo use '
            'configs/ptb_demo.py, which builds them from the Debian package fortunes '
            '(apt-get install fortunes)')


class Corpus(NamedTuple):
  """Token ids of the three splits and the vocabulary.

  Attributes:
    train: i32[N_train] ids, `<eos>` after every line.
    valid: i32[N_valid].
    test: i32[N_test].
    words: id → word.
  """

  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  words: tuple[str, ...]

  @property
  def vocab_size(self) -> int:
    return len(self.words)


def split_path(data_dir: str, split: str) -> str | None:
  """The file of `split` in `data_dir` (`ptb.<split>.txt` or `<split>.txt`), or None."""
  for name in (f'ptb.{split}.txt', f'{split}.txt'):
    path = os.path.join(data_dir, name)
    if os.path.isfile(path):
      return path
  return None


def _read_words(path: str) -> list[str]:
  with open(path, encoding='utf-8') as f:
    return [w for line in f for w in line.split() + [EOS]]


def load_corpus(data_dir: str) -> Corpus:
  """Reads a PTB-layout directory.

  Args:
    data_dir: directory with the three split files.

  Returns:
    The `Corpus`.

  Raises:
    FileNotFoundError: one line naming the directory and what it needs.
    ValueError: when valid/test have words outside the training vocabulary and
      there is no `<unk>` to map them to.
  """
  paths = {s: split_path(data_dir, s) for s in SPLITS} if data_dir else {}
  missing = [s for s in SPLITS if not paths.get(s)]
  if missing:
    raise FileNotFoundError(
        f'language-model data: no {missing[0]} split in {data_dir or "(empty data_dir)"!r}: '
        f'{PTB_HINT}')
  train_words = _read_words(paths['train'])
  index: dict[str, int] = {}
  for w in train_words:
    index.setdefault(w, len(index))
  unk = index.get(UNK)

  def ids(words: Sequence[str], split: str) -> np.ndarray:
    out = np.fromiter((index.get(w, -1) for w in words), np.int32, len(words))
    oov = out < 0
    if oov.any():
      if unk is None:
        first = words[int(np.argmax(oov))]
        raise ValueError(f'{paths[split]}: word {first!r} is not in the training vocabulary '
                         f'and there is no {UNK} token')
      out[oov] = unk
    return out

  return Corpus(ids(train_words, 'train'), ids(_read_words(paths['valid']), 'valid'),
                ids(_read_words(paths['test']), 'test'), tuple(index))


def batchify(ids: np.ndarray, batch_size: int, what: str = 'batch size') -> np.ndarray:
  """i32[N, B]: the stream cut into B equal columns (the tail that does not fit dropped).

  `what` names the batch size in the error (a config field).
  """
  n = len(ids) // batch_size
  if n < 2:
    raise ValueError(f'{len(ids)} tokens are too few for {what} {batch_size} '
                     f'(at least {2 * batch_size} needed)')
  return np.ascontiguousarray(np.asarray(ids[:n * batch_size], np.int32).reshape(batch_size, n).T)


@flax.struct.dataclass
class Chunk:
  """One BPTT chunk, padded to a fixed length so that one compiled step serves all.

  Attributes:
    tokens: i32[T, B] inputs; rows past `length` are padding (zeros).
    targets: i32[T, B] the next words.
    length: i32[] number of valid rows.
    stream: which stream the chunk belongs to ('train', or 'val' for the search's
      α stream), static: it selects the hidden state the model carries for it.
  """

  tokens: np.ndarray
  targets: np.ndarray
  length: np.ndarray
  stream: str = flax.struct.field(pytree_node=False, default='train')


def get_chunk(source_NxB: np.ndarray, i: int, seq_len: int, pad_to: int,
              stream: str = 'train') -> Chunk:
  """Rows i..i+L−1 and their successors, L = min(seq_len, N − 1 − i), as the reference."""
  n = min(seq_len, source_NxB.shape[0] - 1 - i)
  if n <= 0 or n > pad_to:
    raise ValueError(f'chunk at row {i} of length {n} does not fit pad_to={pad_to}')
  tokens = np.zeros((pad_to, source_NxB.shape[1]), np.int32)
  targets = np.zeros_like(tokens)
  tokens[:n] = source_NxB[i:i + n]
  targets[:n] = source_NxB[i + 1:i + 1 + n]
  return Chunk(tokens, targets, np.asarray(n, np.int32), stream)


def search_schedule(num_rows: int, bptt: int, rng: np.random.Generator,
                    half_prob: float = 0.05) -> list[tuple[int, int]]:
  """(row, seq_len) of every step of one search epoch, as the reference's loop.

  A step reads `bptt` rows, or bptt/2 with probability `half_prob` (the reference's
  search keeps the length otherwise fixed).
  """
  out, i = [], 0
  while i < num_rows - 2:
    seq_len = bptt if rng.random() >= half_prob else int(bptt / 2)
    out.append((i, min(seq_len, num_rows - 1 - i)))
    i += seq_len
  return out


def train_schedule(num_rows: int, bptt: int, rng: np.random.Generator, *,
                   half_prob: float = 0.05, std: float = 5.0,
                   max_delta: int = 20) -> list[tuple[int, int]]:
  """(row, seq_len) of every step of one training epoch, as the reference's train.py.

  The base length is bptt (bptt/2 with probability `half_prob`), jittered by
  N(0, std²), at least 5 and at most bptt + max_delta.
  """
  out, i = [], 0
  while i < num_rows - 2:
    base = bptt if rng.random() >= half_prob else bptt / 2.0
    seq_len = min(max(5, int(rng.normal(base, std))), bptt + max_delta)
    out.append((i, min(seq_len, num_rows - 1 - i)))
    i += seq_len
  return out


def eval_schedule(num_rows: int, bptt: int) -> list[tuple[int, int]]:
  """Consecutive chunks of `bptt` rows covering every prediction once."""
  return [(i, min(bptt, num_rows - 1 - i)) for i in range(0, num_rows - 1, bptt)]


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
  """The data-order generator of one epoch; a resumed run rebuilds it identically."""
  return np.random.default_rng([seed, epoch, stream])


# ----------------------------------------------------------------------------------
# An offline English corpus in the PTB layout.

_SENTENCE_END = re.compile(r'(?<=[.!?])\s+')
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")
_CONTRACTION = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")


def tokenize_sentences(text: str) -> list[list[str]]:
  """PTB-style sentences of a text: lower case, punctuation dropped, N for numbers.

  Contractions split as in the treebank ("don't" → "do n't", "it's" → "it 's").
  """
  text = text.lower().replace('\u2019', "'").replace('`', "'")
  sentences = []
  for sentence in _SENTENCE_END.split(text):
    words = []
    for w in _WORD.findall(sentence):
      if any(ch.isdigit() for ch in w):
        words.append('N')
        continue
      m = _CONTRACTION.match(w)
      words.extend([m.group(1), m.group(2)] if m else [w])
    if words:
      sentences.append(words)
  return sentences


def read_fortunes(source_dir: str = FORTUNES_DIR) -> list[str]:
  """The fortunes (texts between '%' lines) of every prose file, attributions dropped.

  Raises:
    FileNotFoundError: one line saying how to install the package.
  """
  names = sorted(n for n in os.listdir(source_dir) if '.' not in n and n not in _FORTUNE_SKIP
                 and os.path.isfile(os.path.join(source_dir, n))) if os.path.isdir(
                     source_dir) else []
  if not names:
    raise FileNotFoundError(f'no fortune files in {source_dir!r}: install the Debian package '
                            'fortunes (apt-get install fortunes)')
  fortunes = []
  for name in names:
    with open(os.path.join(source_dir, name), encoding='utf-8', errors='replace') as f:
      blocks = f.read().split('\n%\n')
    for block in blocks:
      # "-- Author" lines are bylines, not running text.
      lines = [l.strip() for l in block.splitlines() if not l.strip().startswith('--')]
      text = ' '.join(l for l in lines if l and l != '%')
      if text:
        fortunes.append(text)
  return fortunes


def make_corpus(texts: Sequence[str], out_dir: str, *, vocab_size: int = 10000,
                valid_frac: float = 0.08, test_frac: float = 0.08, seed: int = 0) -> dict:
  """Writes ptb.{train,valid,test}.txt from documents, PTB-style.

  Documents are shuffled with `seed` and split whole; the vocabulary is the
  `vocab_size − 2` most frequent training words (ties by spelling), leaving room
  for `<unk>` and the `<eos>` the loader adds, so the loaded vocabulary has at most
  `vocab_size` types as PTB's 10k.

  Returns:
    Counts: tokens per split (with `<eos>`), vocabulary size, `<unk>` rate of train.
  """
  order = np.random.default_rng(seed).permutation(len(texts))
  n_valid, n_test = int(len(texts) * valid_frac), int(len(texts) * test_frac)
  parts = {'valid': order[:n_valid], 'test': order[n_valid:n_valid + n_test],
           'train': order[n_valid + n_test:]}
  sents = {s: [w for k in idx for w in tokenize_sentences(texts[k])]
           for s, idx in parts.items()}
  counts = collections.Counter(w for sent in sents['train'] for w in sent)
  keep = {w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_size - 2]}
  os.makedirs(out_dir, exist_ok=True)
  stats = {}
  for split, sentences in sents.items():
    path = os.path.join(out_dir, f'ptb.{split}.txt')
    tmp = f'{path}.{os.getpid()}.tmp'  # Per process: two runs may build it at once.
    with open(tmp, 'w', encoding='utf-8') as f:
      for sent in sentences:
        f.write(' '.join(w if w in keep else UNK for w in sent) + '\n')
    os.replace(tmp, path)
    stats[f'{split}_tokens'] = sum(len(s) + 1 for s in sentences)
  n_train = sum(len(s) for s in sents['train'])
  stats['unk_rate'] = sum(c for w, c in counts.items() if w not in keep) / max(n_train, 1)
  stats['vocab_size'] = len(keep) + 2
  return stats


def make_fortunes_corpus(out_dir: str, source_dir: str = FORTUNES_DIR, **kwargs) -> dict:
  """`make_corpus` on the Debian `fortunes` texts; see `make_corpus` for kwargs."""
  return make_corpus(read_fortunes(source_dir), out_dir, **kwargs)


def has_corpus(data_dir: str) -> bool:
  return bool(data_dir) and all(split_path(data_dir, s) for s in SPLITS)


def fortunes_corpus_dir(source_dir: str, vocab_size: int) -> str:
  """The cache folder of the corpus built from `source_dir` with `vocab_size` words.

  Named by what determines its contents, so runs (in any workdir) share one build
  and a different source or vocabulary never reads a stale one.
  """
  key = hashlib.sha1(os.path.abspath(source_dir).encode()).hexdigest()[:8]
  return amdarts.cache_dir(f'fortunes_ptb_v{vocab_size}_{key}')


def load_for_config(data_config) -> Corpus:
  """The corpus a config names.

  `data.name='ptb'` reads `data.data_dir`; `'fortunes'` builds the PTB-layout files
  from the Debian texts into `data.data_dir` (default: a folder of the user's cache,
  `fortunes_corpus_dir`, never a run's workdir) unless they are already there, then
  reads them. `data.max_train_tokens` > 0 keeps only the start of the training split
  (for quick demonstrations).
  """
  if data_config.name == 'ptb':
    corpus = load_corpus(data_config.data_dir)
  elif data_config.name == 'fortunes':
    out = data_config.data_dir or fortunes_corpus_dir(data_config.fortunes_dir,
                                                      data_config.vocab_size)
    if not has_corpus(out):
      make_fortunes_corpus(out, data_config.fortunes_dir, vocab_size=data_config.vocab_size)
    corpus = load_corpus(out)
  else:
    raise ValueError(f"data.name must be 'ptb' or 'fortunes', got {data_config.name!r}")
  if data_config.max_train_tokens:
    corpus = corpus._replace(train=corpus.train[:data_config.max_train_tokens])
  return corpus


def main(argv: Iterable[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--fortunes', required=True, metavar='OUT_DIR',
                      help='write ptb.{train,valid,test}.txt built from the fortunes here')
  parser.add_argument('--source', default=FORTUNES_DIR, help='fortune files directory')
  parser.add_argument('--vocab_size', type=int, default=10000)
  args = parser.parse_args(argv)
  stats = make_fortunes_corpus(args.fortunes, args.source, vocab_size=args.vocab_size)
  print(' '.join(f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}'
                 for k, v in stats.items()))


if __name__ == '__main__':
  main()

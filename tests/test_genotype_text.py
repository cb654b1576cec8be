"""Tests for amdarts.genotype_text: JSON and DARTS strings, files, bad input."""

import json

import pytest

from amdarts import genotype_text
from amdarts import genotypes

# DARTS_V2 exactly as the reference prints it (its genotypes.py line, name stripped).
DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=[2, 3, 4, 5])")


# ----------------------------------------------------------------------------------
# Text forms.


def test_darts_v2_string_is_the_reference_repr_and_round_trips():
  assert genotype_text.to_darts_string(genotypes.DARTS_V2) == DARTS_V2_TEXT
  assert genotype_text.from_darts_string(DARTS_V2_TEXT) == genotypes.DARTS_V2
  assert genotypes.NAMED['DARTS_V2'] is genotypes.DARTS_V2
  assert genotypes.NAMED['DARTS_V1'].normal[7] == ('skip_connect', 2)
  assert genotypes.NAMED['DARTS_V1'].reduce[7] == ('avg_pool_3x3', 0)


def test_parses_reference_variants():
  # genotypes.py form with assignment, model.genotype() form with range(), tuples.
  assert genotype_text.from_darts_string('DARTS_V2 = ' + DARTS_V2_TEXT) == genotypes.DARTS_V2
  ranged = DARTS_V2_TEXT.replace('[2, 3, 4, 5]', 'range(2, 6)')
  assert 'range(2, 6)' in ranged
  assert genotype_text.from_darts_string(ranged) == genotypes.DARTS_V2
  positional = ('Genotype([("skip_connect", 1), ("sep_conv_5x5", 0)], (2,), '
                '[("max_pool_3x3", 0), ("max_pool_3x3", 1)], range(2, 3))')
  assert genotype_text.from_darts_string(positional) == genotypes.Genotype(
      (('skip_connect', 1), ('sep_conv_5x5', 0)), (2,),
      (('max_pool_3x3', 0), ('max_pool_3x3', 1)), (2,))


@pytest.mark.parametrize('name', ['darts_v2', 'per_cell'])
def test_json_and_string_round_trips(name, per_cell_genotype):
  genotype = genotypes.DARTS_V2 if name == 'darts_v2' else per_cell_genotype
  assert genotype_text.from_json(genotype_text.to_json(genotype)) == genotype
  assert genotype_text.from_darts_string(genotype_text.to_darts_string(genotype)) == genotype


def test_per_cell_text_forms(per_cell_genotype):
  g = per_cell_genotype
  text = genotype_text.to_darts_string(g)
  assert text.startswith("PerCellGenotype(cells=[CellGenotype(genes=[('skip_connect', 0), ")
  assert text.count('reduction=True') == 1
  obj = json.loads(genotype_text.to_json(g))
  assert obj['kind'] == 'per_cell'
  assert [c['reduction'] for c in obj['cells']] == [False, True]
  assert obj['cells'][1]['genes'][3] == ['sep_conv_3x3', 1]


def test_load_name_json_and_text_files(tmp_path, per_cell_genotype):
  assert genotype_text.load('DARTS_V1') == genotypes.DARTS_V1
  (tmp_path / 'g.json').write_text(genotype_text.to_json(per_cell_genotype))
  (tmp_path / 'g.txt').write_text(DARTS_V2_TEXT + '\n')
  assert genotype_text.load(tmp_path / 'g.json') == per_cell_genotype
  assert genotype_text.load(str(tmp_path / 'g.txt')) == genotypes.DARTS_V2


# ----------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize('text, match', [
    (DARTS_V2_TEXT.replace("'dil_conv_3x3'", "'dil_conv_9x9'"), "unknown op 'dil_conv_9x9'"),
    (DARTS_V2_TEXT.replace(", ('dil_conv_3x3', 2)]", ']'), '2 genes per node, got 7'),
    (DARTS_V2_TEXT.replace("normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)",
                           "normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 2)"),
     r'normal: gene 1 \(node 0\) input index 2 out of range \[0, 2\)'),
    (DARTS_V2_TEXT.replace('normal_concat=[2, 3, 4, 5]', 'normal_concat=[2, 6]'),
     'concat index 6 out of range'),
    (DARTS_V2_TEXT[:-20], 'malformed genotype text'),
    ("__import__('os').system('true')", 'malformed genotype text'),
    (DARTS_V2_TEXT.replace('[2, 3, 4, 5]', 'open(1)', 1),
     'malformed genotype text'),
    (DARTS_V2_TEXT.replace('normal_concat', 'normal_cat'), 'malformed genotype text'),
])
def test_bad_darts_strings(text, match):
  with pytest.raises(ValueError, match=match):
    genotype_text.from_darts_string(text)


def test_bad_json_and_names(tmp_path):
  with pytest.raises(ValueError, match='malformed genotype JSON'):
    genotype_text.from_json('{"normal": [')
  obj = json.loads(genotype_text.to_json(genotypes.DARTS_V2))
  obj['reduce'][0] = ['max_pool_3x3']
  with pytest.raises(ValueError, match=r"reduce: gene 0 must be an \(op name, input index\)"):
    genotype_text.from_json(json.dumps(obj))
  with pytest.raises(ValueError, match="unknown genotype 'NOPE'"):
    genotype_text.load('NOPE')
  bad = tmp_path / 'bad.json'
  bad.write_text('[1, 2]')
  with pytest.raises(ValueError, match='bad.json: malformed genotype JSON'):
    genotype_text.load(bad)

"""FewCLUE, ChnSentiCorp and THUCNews readers on tiny fixtures; per-character CJK splitting."""

import json

import pytest

from data import clue


def _jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows), encoding='utf-8')


def test_fewclue_single_sentence_with_int_codes(tmp_path):
  _jsonl(
    tmp_path / 'tnews' / 'train_few_all.json',
    [
      {'label': 100, 'label_desc': 'news_story', 'sentence': '农村', 'keywords': '', 'id': 448},
      {'label': 116, 'label_desc': 'news_game', 'sentence': '游戏', 'keywords': 'a', 'id': 3},
    ],
  )
  records, labels = clue.read_fewclue(str(tmp_path), 'tnews', 'train')
  assert len(labels) == 15 and labels[0] == '100' and labels[-1] == '116'
  assert records == [
    {'text_a': '农村', 'text_b': None, 'label': 0, 'idx': 448},
    {'text_a': '游戏', 'text_b': None, 'label': 14, 'idx': 3},
  ]


def test_fewclue_pairs_names_and_skipped_labels(tmp_path):
  _jsonl(
    tmp_path / 'ocnli' / 'dev_few_all.json',
    [
      {'sentence1': '甲', 'sentence2': '乙', 'label': 'neutral', 'label0': None, 'id': 0},
      {'sentence1': '丙', 'sentence2': '丁', 'label': '-', 'id': 1},  # no majority: dropped
      {'sentence1': '戊', 'sentence2': '己', 'label': 'contradiction', 'id': 2},
    ],
  )
  records, labels = clue.read_fewclue(str(tmp_path), 'ocnli', 'dev')
  assert labels == ['entailment', 'neutral', 'contradiction']
  assert [(r['text_a'], r['text_b'], r['label'], r['idx']) for r in records] == [
    ('甲', '乙', 1, 0),
    ('戊', '己', 2, 2),
  ]


def test_fewclue_csl_csldcp_and_unlabelled(tmp_path):
  _jsonl(
    tmp_path / 'csl' / 'test_public.json',
    [{'id': 5, 'abst': '摘要。', 'keyword': ['网络', '查询'], 'label': '1'}],
  )
  (record,), _ = clue.read_fewclue(str(tmp_path), 'csl', 'test_public')
  assert record == {'text_a': '网络 查询', 'text_b': '摘要。', 'label': 1, 'idx': 5}
  (tmp_path / 'csldcp').mkdir()
  (tmp_path / 'csldcp' / 'labels_all.txt').write_text('材料\n作物学\n', encoding='utf-8')
  _jsonl(tmp_path / 'csldcp' / 'train_0.json', [{'content': '水稻', 'label': '作物学', 'id': 1}])
  records, labels = clue.read_fewclue(str(tmp_path), 'csldcp', 'train_0')
  assert labels == ['材料', '作物学'] and records[0]['label'] == 1
  _jsonl(tmp_path / 'eprstmt' / 'unlabeled.json', [{'sentence': '好', 'id': 0}])
  records, _ = clue.read_fewclue(str(tmp_path), 'eprstmt', 'unlabeled')
  assert records == [{'text_a': '好', 'text_b': None, 'label': None, 'idx': 0}]


def test_cluewsc_marks_both_spans(tmp_path):
  text = '小明说他累了'
  target = {'span1_index': 0, 'span1_text': '小明', 'span2_index': 3, 'span2_text': '他'}
  _jsonl(
    tmp_path / 'cluewsc' / 'dev_few_all.json',
    [{'target': target, 'idx': 7, 'label': 'true', 'text': text}],
  )
  (record,), labels = clue.read_fewclue(str(tmp_path), 'cluewsc', 'dev')
  assert record == {'text_a': '_小明_说[他]累了', 'text_b': None, 'label': 1, 'idx': 7}
  target['span2_index'] = 4
  _jsonl(
    tmp_path / 'cluewsc' / 'train_few_all.json',
    [{'target': target, 'idx': 0, 'label': 'true', 'text': text}],
  )
  with pytest.raises(ValueError, match='span2_text'):
    clue.read_fewclue(str(tmp_path), 'cluewsc', 'train')


def test_fewclue_errors(tmp_path):
  with pytest.raises(ValueError, match='multiple choice'):
    clue.read_fewclue(str(tmp_path), 'chid', 'train')
  with pytest.raises(FileNotFoundError, match='bustm'):
    clue.read_fewclue(str(tmp_path), 'bustm', 'train')
  _jsonl(tmp_path / 'bustm' / 'train_few_all.json', [{'sentence1': '甲', 'label': '0', 'id': 0}])
  with pytest.raises(ValueError, match="no field 'sentence2'"):
    clue.read_fewclue(str(tmp_path), 'bustm', 'train')
  _jsonl(
    tmp_path / 'eprstmt' / 'train_few_all.json', [{'sentence': '好', 'label': 'Neutral', 'id': 0}]
  )
  with pytest.raises(ValueError, match=r"train_few_all.json:1: label 'Neutral'"):
    clue.read_fewclue(str(tmp_path), 'eprstmt', 'train')
  (tmp_path / 'eprstmt' / 'dev_few_all.json').write_text('{"sentence": \n', encoding='utf-8')
  with pytest.raises(ValueError, match='not a JSON object'):
    clue.read_fewclue(str(tmp_path), 'eprstmt', 'dev')


def test_chnsenticorp_quoted_csv(tmp_path):
  path = tmp_path / 'ChnSentiCorp_htl_all.csv'
  path.write_text('label,review\n1,"近,但""蔡陆线""麻烦"\n0,差\n1,\n', encoding='utf-8')
  records, labels = clue.read_chnsenticorp(str(path))
  assert labels == ['0', '1']
  assert [(r['text_a'], r['label'], r['idx']) for r in records] == [
    ('近,但"蔡陆线"麻烦', 1, 0),
    ('差', 0, 1),
    ('', 1, 2),
  ]
  path.write_text('review,label\n差,0\n', encoding='utf-8')
  with pytest.raises(ValueError, match='label,review'):
    clue.read_chnsenticorp(str(path))


def test_thucnews_ids_and_class_file(tmp_path):
  (tmp_path / 'class.txt').write_text('finance\nrealty\nstocks', encoding='utf-8')
  (tmp_path / 'dev.txt').write_text('同步A股首秀\t2\n60年铁树\t0\n', encoding='utf-8')
  records, labels = clue.read_thucnews(str(tmp_path / 'dev.txt'))
  assert labels == ['finance', 'realty', 'stocks']
  assert records == [
    {'text_a': '同步A股首秀', 'text_b': None, 'label': 2, 'idx': 0},
    {'text_a': '60年铁树', 'text_b': None, 'label': 0, 'idx': 1},
  ]
  (tmp_path / 'test.txt').write_text('标题\t3\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r'test.txt:1: class id 3'):
    clue.read_thucnews(str(tmp_path / 'test.txt'))
  (tmp_path / 'test.txt').write_text('没有标签\n', encoding='utf-8')
  with pytest.raises(ValueError, match='headline<TAB>class id'):
    clue.read_thucnews(str(tmp_path / 'test.txt'))


def test_chinese_char_split():
  assert clue.chinese_char_split('我爱NLP') == ' 我  爱 NLP'
  assert clue.chinese_char_split('BERT, 很好!').split() == ['BERT,', '很', '好', '!']
  # Extension B ideograph (outside the BMP) splits too; Hangul and kana do not.
  assert clue.chinese_char_split('𠀀한글カナ').split() == ['𠀀', '한글カナ']
  assert clue.chinese_char_split('no cjk here') == 'no cjk here'

"""Tests for pipeline/corpus/wiki.py: reading MediaWiki exports and cleaning pages."""

import bz2
import collections
import logging
import os
import pickle
import re
import time
import tracemalloc

import pytest

from pipeline.corpus import wiki
from pipeline.core.errors import InputError
from tests import wiki_fixtures

REAL_SAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
    "shared", "data", "enwiki-sample-pages-articles.xml.bz2")

RIVERTON_CLEAN = "\n".join([
    'Riverton is a town on the Blue River in the "Example Valley". It was '
    "founded in 1850 by John Smith. It appears in Star Trek: The Motion "
    "Picture.",
    "History.",
    "The town grew around a mill and a ferry crossing that linked it to the "
    "Lakesides.",
    "Economy.",
    "Today the economy rests on tourism and fishing. The town museum opened "
    "in 1990.",
])


def _page(text, title="Example", ns=0, redirect=False, page_id=7):
  return wiki.Page(id=page_id, revid=70, title=title, ns=ns,
                   redirect=redirect, text=text)


def _clean_text(text, min_chars=1):
  doc, reason = wiki.clean_page(_page(text), min_chars)
  assert reason is None, reason
  return doc["text"]


def _sample_docs(tmp_path):
  """{title: (doc, reason)} for the sample pages, read back from a dump."""
  path = wiki_fixtures.write_dump(tmp_path / "sample.xml.bz2",
                                  wiki_fixtures.sample_pages())
  return {page.title: wiki.clean_page(page, wiki_fixtures.SAMPLE_MIN_CHARS)
          for page in wiki.iter_pages(path)}


# --- iter_pages -------------------------------------------------------------


def test_iter_pages_reads_every_field(tmp_path):
  samples = wiki_fixtures.sample_pages()
  path = wiki_fixtures.write_dump(tmp_path / "sample.xml", samples)
  pages = list(wiki.iter_pages(path))
  assert [p.title for p in pages] == [s["title"] for s in samples]
  assert pages[0] == wiki.Page(
      id=101, revid=101000, title="Riverton", ns=0, redirect=False,
      text=wiki_fixtures.RIVERTON_TEXT)
  assert pages[1].redirect and pages[1].id == 102
  assert pages[4].ns == 1 and pages[4].title == "Talk:Riverton"


def test_bz2_and_plain_xml_give_the_same_pages(tmp_path):
  samples = wiki_fixtures.sample_pages()
  plain = wiki_fixtures.write_dump(tmp_path / "a.xml", samples)
  packed = wiki_fixtures.write_dump(tmp_path / "a.xml.bz2", samples)
  assert bz2.decompress(packed.read_bytes()) == plain.read_bytes()
  assert list(wiki.iter_pages(packed)) == list(wiki.iter_pages(plain))


def test_export_version_0_11_is_read(tmp_path):
  samples = wiki_fixtures.sample_pages()
  path = wiki_fixtures.write_dump(tmp_path / "a.xml", samples, version="0.11")
  assert len(list(wiki.iter_pages(path))) == len(samples)


def test_the_last_revision_is_the_page_text(tmp_path):
  xml = wiki_fixtures.dump_xml([dict(id=5, title="T", text="old")])
  second = "<revision><id>9</id><text>new</text></revision></page>"
  path = tmp_path / "history.xml"
  path.write_text(xml.replace("</page>", second, 1), encoding="utf-8")
  (page,) = wiki.iter_pages(path)
  assert (page.revid, page.text) == (9, "new")


def test_a_broken_page_is_skipped_not_fatal(tmp_path):
  pages = [dict(id=5, title="Good", text="Prose. " * 40), dict(id=6, title="Bad", text="x"),
           dict(id=7, title="NoRev", text="y")]
  xml = wiki_fixtures.dump_xml(pages).replace("<id>6</id>", "<id>six</id>", 1)
  start = xml.index("<title>NoRev</title>")
  rev_start, rev_end = xml.index("<revision>", start), xml.index("</revision>", start)
  xml = xml[:rev_start] + xml[rev_end + len("</revision>"):]
  path = tmp_path / "broken.xml"
  path.write_text(xml, encoding="utf-8")
  good, bad, norev = wiki.iter_pages(path)
  assert good.error is None and "not an integer" in bad.error and "no <revision>" in norev.error
  reasons = [wiki.clean_page(p, 50)[1] for p in (good, bad, norev)]
  assert reasons == [None, wiki.MALFORMED_PAGE, wiki.MALFORMED_PAGE]


def test_memory_stays_flat_while_streaming(tmp_path):
  pages = [dict(title=f"P{i}", text="Some prose. " * 200) for i in range(2000)]
  path = wiki_fixtures.write_dump(tmp_path / "big.xml.bz2", pages)
  tracemalloc.start()
  try:
    count = sum(1 for _ in wiki.iter_pages(path))
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert count == 2000
  assert peak < 1_000_000  # The XML is ~5 MB: pages must not pile up.


def test_pages_and_docs_are_picklable_for_a_pool(tmp_path):
  path = wiki_fixtures.write_dump(tmp_path / "a.xml",
                                  wiki_fixtures.sample_pages())
  page = next(wiki.iter_pages(path))
  result = wiki.clean_page(page, 1)
  assert pickle.loads(pickle.dumps((page, result))) == (page, result)


# --- iter_pages: bad input ---------------------------------------------------


def _input_error(path):
  with pytest.raises(InputError) as info:
    for _ in wiki.iter_pages(path):
      pass
  assert info.value.path == str(path)
  assert str(path) in str(info.value) and "\n" not in info.value.cause
  return info.value.cause


def test_truncated_bz2_raises(tmp_path):
  path = wiki_fixtures.write_dump(tmp_path / "cut.xml.bz2",
                                  wiki_fixtures.sample_pages())
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  assert "truncated bz2 file" in _input_error(path)


def test_corrupt_bz2_raises(tmp_path):
  path = wiki_fixtures.write_dump(tmp_path / "bad.xml.bz2",
                                  wiki_fixtures.sample_pages())
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 64] = bytes(64)
  path.write_bytes(bytes(data))
  assert "corrupt bz2 data" in _input_error(path)


def test_not_bz2_at_all_raises(tmp_path):
  path = tmp_path / "text.xml.bz2"
  path.write_bytes(b"<mediawiki>plain text, not bz2</mediawiki>")
  assert "corrupt bz2 data" in _input_error(path)


def test_malformed_xml_raises_with_line_and_column(tmp_path):
  xml = wiki_fixtures.dump_xml(wiki_fixtures.sample_pages())
  where = xml.index("</title>")
  line = xml.count("\n", 0, where) + 1
  # Expat points at the tag name, just after '</'.
  column = where - xml.rindex("\n", 0, where) - 1 + len("</")
  path = tmp_path / "bad.xml"
  path.write_text(xml.replace("</title>", "</titel>", 1), encoding="utf-8")
  assert _input_error(path) == (
      f"malformed XML at line {line}, column {column}: mismatched tag")


def test_truncated_plain_xml_raises(tmp_path):
  xml = wiki_fixtures.dump_xml(wiki_fixtures.sample_pages())
  path = tmp_path / "cut.xml"
  path.write_text(xml[:len(xml) // 2], encoding="utf-8")
  assert "truncated?" in _input_error(path)


def test_unsupported_export_version_raises(tmp_path):
  path = wiki_fixtures.write_dump(tmp_path / "old.xml",
                                  wiki_fixtures.sample_pages(), version="0.3")
  assert _input_error(path) == ("unsupported MediaWiki export format version "
                                "0.3 (expected 0.10 or 0.11)")


def test_root_other_than_mediawiki_raises(tmp_path):
  path = tmp_path / "feed.xml"
  path.write_text("<rss version='2.0'><channel/></rss>", encoding="utf-8")
  assert "root element is <rss>, not <mediawiki>" in _input_error(path)


@pytest.mark.parametrize("name,data", [("empty.xml", b""),
                                       ("empty.xml.bz2", b""),
                                       ("nothing.xml.bz2", bz2.compress(b""))])
def test_empty_file_raises(tmp_path, name, data):
  path = tmp_path / name
  path.write_bytes(data)
  assert _input_error(path) == "empty file: no XML content"


def test_missing_file_raises(tmp_path):
  assert "cannot open" in _input_error(tmp_path / "nope.xml.bz2")


# --- clean_page ---------------------------------------------------------------


def test_sample_pages_are_kept_or_dropped_for_the_expected_reason(tmp_path):
  docs = _sample_docs(tmp_path)
  expected = {s["title"]: s["expect"] for s in wiki_fixtures.sample_pages()}
  assert {title: reason for title, (_, reason) in docs.items()} == expected


def test_main_article_exact_text_and_fields(tmp_path):
  doc, _ = _sample_docs(tmp_path)["Riverton"]
  assert doc == {
      "id": "101",
      "revid": "101000",
      "title": "Riverton",
      "url": "https://en.wikipedia.org/wiki?curid=101",
      "text": RIVERTON_CLEAN,
  }


def test_non_latin_scripts_are_intact(tmp_path):
  docs = _sample_docs(tmp_path)
  assert docs["Москва"][0]["text"] == (
      "Москва — столица России, крупнейший по численности населения город "
      "страны.\nИстория.\nПервое упоминание о Москве в летописях относится к "
      "1147 году.")
  assert docs["北京市"][0]["text"] == (
      "北京市，简称京，是中华人民共和国的首都，也是全国的政治、文化和国际交往中心。"
      "\n历史.\n北京地区的人类活动可以追溯到约七十万年前的北京猿人。")
  assert docs["القاهرة"][0]["text"] == (
      "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها، وتقع على ضفاف نهر "
      "النيل.\nالتاريخ.\nتأسست القاهرة عام 969 م على يد الفاطميين.")


def test_text_and_title_are_nfc(tmp_path):
  title = wiki_fixtures.CAFE_DECOMPOSED + " society"
  doc, _ = _sample_docs(tmp_path)[title]
  assert doc["title"] == "Caf\u00e9 society"
  assert doc["text"] == ("Caf\u00e9 society was the caf\u00e9 culture of Paris "
                         "and Vienna, where writers met to talk.")


def test_too_short_counts_cleaned_characters():
  text = "'''Tiny''' is a hamlet.{{geo-stub}}"  # Cleans to 17 characters.
  assert wiki.clean_page(_page(text), 17)[1] is None
  assert wiki.clean_page(_page(text), 18) == (None, "too_short")


def test_a_page_that_makes_wikiextractor_raise_is_a_parse_error(monkeypatch):
  def explode(*unused_args, **unused_kwargs):
    raise ValueError("boom")

  monkeypatch.setattr(wiki.extract.Extractor, "clean_text", explode)
  assert wiki.clean_page(_page("Some prose."), 1) == (None, "parse_error")


@pytest.mark.parametrize("page,reason", [
    (_page("x", redirect=True), "redirect"),
    (_page("#REDIRECT [[Elsewhere]]"), "redirect"),
    (_page("Prose.", title="User:Someone", ns=2), "non_article_namespace"),
    (_page("Prose.", title="Mercury (Disambiguation)"), "disambiguation"),
    (_page("Prose.\n{{disambiguation}}"), "disambiguation"),
    (_page("Prose.\n{{ Disambiguation | geo }}"), "disambiguation"),
    (_page("Prose.\n{{disambig}}"), "disambiguation"),
    (_page("Prose.\n{{DAB}}"), "disambiguation"),
    (_page("Prose.\n{{hndis|Smith, John}}"), "disambiguation"),
    (_page("Prose.\n{{geodis}}"), "disambiguation"),
    (_page("Prose.\n__DISAMBIG__"), "disambiguation"),
    (_page("Prose.{{disambiguation needed|date=May 2020}}"), None),
    (_page("{{About|the town|other uses|Riverton (disambiguation)}}Prose."),
     None),
])
def test_drop_reasons(page, reason):
  assert wiki.clean_page(page, 1)[1] == reason


def test_references_of_every_form_are_removed():
  text = ("A<ref>plain</ref> B<ref name=x/> C<ref name=\"p/q\">slash</ref> "
          "D<REF NAME=\"y\" >upper</REF> E<ref name=\"z\" /> F.\n"
          "{{Reflist}}<references/>")
  assert _clean_text(text) == "A B C D E F."


def test_file_image_and_category_links_go_with_their_captions():
  text = ("[[File:A.jpg|thumb|Caption with [[nested|a link]]]]Prose one.\n"
          "[[Image:B.png|left|200px|Another caption]]\n"
          "Prose two. [[Category:Things]][[Category:Other things| ]]\n"
          "[[de:Beispiel]]")
  assert _clean_text(text) == "Prose one.\nProse two."


def test_links_become_labels_even_with_a_colon_in_the_title():
  text = ("Films: [[2001: A Space Odyssey (film)|2001]], [[Mad Max: Fury "
          "Road]] and a [[wikt:brigand|brigand]] in [[UTC−05:00]]; "
          "[[Wikipedia:Spam|policy]] and [[WP:MOS]] are not prose.")
  assert _clean_text(text) == ("Films: 2001, Mad Max: Fury Road and a brigand "
                               "in UTC−05:00; and are not prose.")


def test_an_unclosed_link_does_not_leak_later_markup():
  text = ("A typo [[Foo] here. Then [[Bar|bar]].\n"
          "[[File:X.jpg|thumb|A caption]]\n[[Category:Things]]")
  assert _clean_text(text) == "A typo Foo] here. Then bar."


def test_html_tags_comments_and_entities():
  text = ("<div style=\"x\">Kept <span>inline</span> text</div><!-- hidden -->"
          " a&nbsp;b<br/>next<br>line &amp; more.\n<!--\nmulti-line\n-->")
  assert _clean_text(text) == "Kept inline text a\u00a0b next line & more."


def test_external_links_keep_their_label_whatever_the_case_of_the_scheme():
  text = "See [HTTP://EXAMPLE.ORG/x the site] and [https://example.org/y it]."
  assert _clean_text(text) == "See the site and it."


def test_paragraphs_are_lines_and_empty_ones_are_dropped():
  text = "First paragraph.\n\n\n   \nSecond paragraph.  \n{{template}}\nThird."
  assert _clean_text(text) == "First paragraph.\nSecond paragraph.\nThird."


def test_cleaning_is_quiet_and_writes_no_files(tmp_path, monkeypatch, caplog,
                                               capsys):
  monkeypatch.chdir(tmp_path)
  with caplog.at_level(logging.DEBUG):
    for sample in wiki_fixtures.sample_pages():
      page = _page(sample["text"], title=sample["title"])
      wiki.clean_page(page, wiki_fixtures.SAMPLE_MIN_CHARS)
  assert caplog.records == []
  assert capsys.readouterr() == ("", "")
  assert list(tmp_path.iterdir()) == []


# --- the real sample dump ---------------------------------------------------


@pytest.mark.skipif(not os.path.exists(REAL_SAMPLE),
                    reason="needs ../shared/data/enwiki-sample-pages-articles"
                    ".xml.bz2 beside the repo (absent in a fresh clone)")
def test_real_sample_dump(capsys):
  pages = list(wiki.iter_pages(REAL_SAMPLE))
  start = time.perf_counter()
  results = [wiki.clean_page(page, 200) for page in pages]
  seconds = time.perf_counter() - start
  with capsys.disabled():
    print(f"\ncleaned {len(pages)} sample pages in {seconds:.2f}s "
          "(one process)")
  assert len(pages) == 206
  reasons = collections.Counter(reason for _, reason in results)
  assert reasons == {None: 97, "redirect": 100, "disambiguation": 8,
                     "too_short": 1}
  docs = [doc for doc, _ in results if doc]
  for doc in docs:
    for remnant in ("{{", "}}", "[[", "]]", "<ref", "Category:", "thumb|"):
      assert remnant not in doc["text"], (doc["title"], remnant)
    assert "\n\n" not in doc["text"] and doc["text"] == doc["text"].strip()
  assert 2_000_000 < sum(len(doc["text"]) for doc in docs) < 3_000_000

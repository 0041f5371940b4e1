"""Small MediaWiki XML exports for tests of the Wikipedia stage.

  from tests import wiki_fixtures

  path = tmp_path / "dump.xml.bz2"
  wiki_fixtures.write_dump(path, wiki_fixtures.sample_pages())

A page is a dict:
  "title"    str, required.
  "text"     str, the wikitext of its one revision, required.
  "id"       int, default 1 + its index in the list.
  "revid"    int, default 1000 * id.
  "ns"       int, default 0 (the article namespace).
  "redirect" str or None: the target title, which writes <redirect title=..>.
  "expect"   ignored by write_dump; in sample_pages(), the reason that
             pipeline.corpus.wiki.clean_page(page, SAMPLE_MIN_CHARS) gives (None when
             the page is kept), so a test can check a whole stage's counts.
"""

import bz2
from xml.sax import saxutils

# The min_chars that sample_pages()'s "expect" reasons assume.
SAMPLE_MIN_CHARS = 50

_NAMESPACES = ((0, ""), (1, "Talk"), (4, "Wikipedia"), (6, "File"),
               (10, "Template"), (14, "Category"))


def write_dump(path, pages, version="0.10", compress=None):
  """Writes `pages` as a MediaWiki export at `path` and returns the path.

  compress: None to compress with bz2 exactly when the path ends with '.bz2',
  else True or False to force it. version: the export format version written
  into the root element and its namespace (real dumps use "0.10" or "0.11").
  """
  data = dump_xml(pages, version).encode("utf-8")
  if compress is None:
    compress = str(path).endswith(".bz2")
  opener = bz2.open if compress else open
  with opener(path, "wb") as f:
    f.write(data)
  return path


def dump_xml(pages, version="0.10"):
  """The export document for `pages`, as a str (see write_dump)."""
  xmlns = f"http://www.mediawiki.org/xml/export-{version}/"
  head = (f'<mediawiki xmlns="{xmlns}" version="{version}" xml:lang="en">\n' +
          _siteinfo_xml())
  body = "".join(_page_xml(page, i) for i, page in enumerate(pages))
  return head + body + "</mediawiki>\n"


def _siteinfo_xml():
  namespaces = "".join(
      f'      <namespace key="{key}" case="first-letter">{name}</namespace>\n'
      for key, name in _NAMESPACES)
  return ("  <siteinfo>\n"
          "    <sitename>Wikipedia</sitename>\n"
          "    <dbname>enwiki</dbname>\n"
          "    <base>https://en.wikipedia.org/wiki/Main_Page</base>\n"
          "    <generator>MediaWiki 1.27.0-wmf.22</generator>\n"
          "    <case>first-letter</case>\n"
          f"    <namespaces>\n{namespaces}    </namespaces>\n"
          "  </siteinfo>\n")


def _page_xml(page, index):
  page_id = page.get("id", index + 1)
  text = page["text"]
  redirect = ""
  if page.get("redirect"):
    target = saxutils.quoteattr(page["redirect"])
    redirect = f"    <redirect title={target} />\n"
  return (
      "  <page>\n"
      f"    <title>{saxutils.escape(page['title'])}</title>\n"
      f"    <ns>{page.get('ns', 0)}</ns>\n"
      f"    <id>{page_id}</id>\n" + redirect + "    <revision>\n"
      f"      <id>{page.get('revid', 1000 * page_id)}</id>\n"
      "      <timestamp>2016-03-01T00:00:00Z</timestamp>\n"
      "      <model>wikitext</model>\n"
      "      <format>text/x-wiki</format>\n"
      f'      <text xml:space="preserve" bytes="{len(text.encode())}">'
      f"{saxutils.escape(text)}</text>\n"
      "    </revision>\n"
      "  </page>\n")


# The main article: most of the markup a real article has, around prose
# whose exact cleaned form tests/test_wiki.py spells out. (Wikitext lines are
# paragraphs, so they stay as long as they are in real articles.)
RIVERTON_TEXT = """\
{{Short description|Town in the Example Valley}}
{{Infobox settlement
| name        = Riverton
| image       = Riverton skyline.jpg
| population  = 12,000<ref>{{cite web |url=http://example.org/census |title=Census}}</ref>
| coordinates = {{coord|45|N|{{nowrap|120|W}}}}
}}
'''Riverton''' is a [[town]] on the [[Blue River (Example)|Blue River]] in the ''Example Valley''.<ref name="census">{{cite book |title=Towns of the Valley |year=1999}}</ref> It was founded in 1850 by [[John Smith (settler)|John Smith]].<ref name=census/> <!-- editors: keep this short --> It appears in [[Star Trek: The Motion Picture]].<ref name="atlas/4">Atlas, p. 4.</ref>

[[File:Riverton bridge.jpg|thumb|right|The old bridge over the [[Blue River (Example)|Blue River]] in 1900]]
== History ==
The town grew around a [[Grain mill|mill]]{{citation needed|date=May 2020}} and a <div class="note">ferry crossing</div> that linked it to the [[Lakeside]]s.

{| class="wikitable"
|+ Population
! Year !! Population
|-
| 1900 || 1,200
|-
| 2000 || 12,000
|}

=== Economy ===
Today the economy rests on [[tourism]] and fishing. The [http://example.org/museum town museum] opened in 1990.

== See also ==
* [[Blue River (Example)]]
* [[Lakeside]]

== References ==
{{Reflist}}

[[Category:Towns in the Example Valley]]
[[Category:Populated places established in 1850]]
"""

MOSCOW_TEXT = """\
{{Infobox city|name=Москва}}
'''Москва''' — столица [[Россия|России]], крупнейший по численности населения город страны.<ref>{{cite web|title=Росстат}}</ref>

== История ==
Первое упоминание о Москве в летописях относится к 1147 году.
[[Category:Capitals in Europe]]
"""

BEIJING_TEXT = """\
'''北京市'''，简称'''京'''，是[[中华人民共和国]]的[[首都]]，也是全国的政治、文化和国际交往中心。<ref>{{cite web|title=北京}}</ref>

== 历史 ==
北京地区的人类活动可以追溯到约七十万年前的[[北京猿人]]。
"""

CAIRO_TEXT = """\
'''القاهرة''' هي عاصمة [[مصر|جمهورية مصر العربية]] وأكبر مدنها، وتقع على ضفاف [[نهر النيل]].<ref>مصدر</ref>

== التاريخ ==
تأسست القاهرة عام 969 م على يد [[الفاطميون|الفاطميين]].
"""

# 'e' + U+0301 COMBINING ACUTE ACCENT, which NFC composes to U+00E9.
CAFE_DECOMPOSED = "Cafe\u0301"
CAFE_TEXT = (
    f"'''{CAFE_DECOMPOSED} society''' was the [[{CAFE_DECOMPOSED}|"
    f"{CAFE_DECOMPOSED.lower()}]] culture of Paris and Vienna, where writers "
    "met to talk.\n")


def sample_pages():
  """A fresh list of realistic pages, one per case the cleaner handles."""
  return [
      dict(id=101, title="Riverton", text=RIVERTON_TEXT, expect=None),
      dict(id=102, title="Riverton, Example", redirect="Riverton",
           text="#REDIRECT [[Riverton]] {{R from alternative name}}",
           expect="redirect"),
      dict(id=103, title="Mercury (disambiguation)", expect="disambiguation",
           text="'''Mercury''' may refer to:\n* [[Mercury (planet)]]\n"
           "* [[Mercury (element)]]\n"),
      dict(id=104, title="Jaguar", expect="disambiguation",
           text="'''Jaguar''' may refer to:\n* [[Jaguar]], a big cat\n"
           "* [[Jaguar Cars]]\n\n{{Disambig|geo}}\n"),
      dict(id=105, title="Talk:Riverton", ns=1,
           expect="non_article_namespace",
           text="== Population figure ==\nIs the 12,000 figure still "
           "current? It looks old to me. ~~~~\n"),
      dict(id=106, title="Tiny", text="'''Tiny''' is a hamlet.{{geo-stub}}\n",
           expect="too_short"),
      dict(id=107, title="Москва", text=MOSCOW_TEXT, expect=None),
      dict(id=108, title="北京市", text=BEIJING_TEXT, expect=None),
      dict(id=109, title="القاهرة", text=CAIRO_TEXT, expect=None),
      dict(id=110, title=f"{CAFE_DECOMPOSED} society", text=CAFE_TEXT,
           expect=None),
  ]

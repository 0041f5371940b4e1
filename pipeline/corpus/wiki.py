"""Reads a MediaWiki XML export and turns its articles into plain-text docs.

Two stages, so the caller can parallelise the expensive one:

  for page in iter_pages("enwiki-...-pages-articles.xml.bz2"):  # one process
    doc, reason = clean_page(page, min_chars=200)                # a Pool

`iter_pages` streams the dump (multi-GB files in flat memory) and yields `Page`
tuples; `clean_page` is a pure function that strips the wiki markup with
wikiextractor's cleaner and says why a page was dropped. Both take and return
only picklable values.
"""

import bz2
import importlib
import os
import re
import typing
import unicodedata
from xml.etree import ElementTree
from xml.parsers import expat

from pipeline.core.errors import InputError

SUPPORTED_EXPORT_VERSIONS = ("0.10", "0.11")
# Bump when clean_page's output changes for the same page: a refresh reuses
# previously cleaned documents only when this (and the config) is unchanged.
# 2: a document's url is on its own wiki (was en.wikipedia.org for every dump).
CLEANER_VERSION = 2
URL_BASE = "https://en.wikipedia.org/wiki"  # when neither siteinfo nor file name tell
_WIKI_CODE_RE = re.compile(r"([a-z][a-z0-9_]*?)wiki-")  # bgwiki-20240101-... -> bg

# Why clean_page dropped a page (None means it was kept).
REDIRECT = "redirect"
NON_ARTICLE_NAMESPACE = "non_article_namespace"
DISAMBIGUATION = "disambiguation"
TOO_SHORT = "too_short"
PARSE_ERROR = "parse_error"
MALFORMED_PAGE = "malformed_page"  # a <page> without a revision or numeric ids
DROP_REASONS = (REDIRECT, NON_ARTICLE_NAMESPACE, DISAMBIGUATION, TOO_SHORT,
                PARSE_ERROR, MALFORMED_PAGE)


class Page(typing.NamedTuple):
  """One <page> of the export, with the text of its (last) revision."""
  id: int
  revid: int
  title: str
  ns: int
  redirect: bool
  text: str
  error: typing.Optional[str] = None  # why the <page> is unusable (then skipped)
  site: str = URL_BASE  # the wiki's article base URL, e.g. https://bg.wikipedia.org/wiki


# ---------------------------------------------------------------------------
# wikiextractor: import and configuration (once per process, at import).


def _import_extract():
  """Imports wikiextractor's cleaner, or says which version to install."""
  try:
    return importlib.import_module("wikiextractor.extract")
  except re.error as e:
    # 3.0.6 puts '(?i)' mid-pattern, an error since Python 3.11 (upstream
    # issue WikiExtractor/wikiextractor#336); 3.0.8 fixed it.
    raise ImportError(
        f"wikiextractor cannot be imported on this Python ({e}); install "
        "the version pinned in requirements.txt") from e


extract = _import_extract()

# Namespaces (and their aliases) of English Wikipedia, case-folded, whose links
# are not prose: [[File:..|caption]], [[Category:..]], [[Wikipedia:..]]...
_NAMESPACES = frozenset(
    name + suffix for name in (
        "media", "special", "user", "wikipedia", "wp", "project", "file",
        "image", "mediawiki", "template", "help", "category", "portal",
        "book", "draft", "timedtext", "module", "gadget",
        "gadget definition", "education program", "topic")
    for suffix in ("", " talk")) | {"talk", "wt", "image talk"}
# Sister projects whose inline links read as prose ([[wikt:word|word]]).
_SISTER_PROJECTS = frozenset((
    "w", "wikt", "wiktionary", "s", "wikisource", "q", "wikiquote", "b",
    "wikibooks", "n", "wikinews", "v", "wikiversity", "voy", "wikivoyage"))
_INTERWIKI_PREFIX_RE = re.compile(r"[a-z]+(?:-[a-z]+)*")


class _ProseLinkPrefixes:
  """Stands in for wikiextractor's `acceptedNamespaces` list.

  For a link [[Prefix:Rest|label]], wikiextractor keeps the label only if
  `Prefix in acceptedNamespaces`; its default list (w, wikt, wiktionary) thus
  also deletes links to titles that merely contain a colon, e.g.
  [[The Lord of the Rings: The Return of the King]], leaving holes in prose.
  This container instead rejects just real namespaces and interlanguage
  prefixes (lower-case codes like 'de' or 'zh-yue'), which is tuned to
  English Wikipedia, like URL_BASE.
  """

  def __contains__(self, prefix):
    name = prefix.strip().replace("_", " ")
    if name.casefold() in _NAMESPACES:
      return False
    if _INTERWIKI_PREFIX_RE.fullmatch(name):
      return name in _SISTER_PROJECTS
    return True


def _configure_extractor():
  """Sets wikiextractor's module globals as its CLI does for plain text.

  WikiExtractor.main() configures the cleaner through class attributes and
  module globals, not arguments, so the same has to happen here, once per
  process (a Pool worker re-imports or forks this module, so it has it too).
  """
  extract.Extractor.keepLinks = False  # Links become their label (no --links).
  extract.Extractor.HtmlFormatting = False  # Plain text (no --html).
  extract.Extractor.keepSections = True  # Keep section headings' text.
  extract.acceptedNamespaces = _ProseLinkPrefixes()
  ignored = {left.pattern for left, _ in extract.ignored_tag_patterns}
  # The CLI drops <a> tags (keeping their text) when links are not kept;
  # <onlyinclude> wraps text that is part of the article itself.
  for tag in ("a", "onlyinclude"):
    if not any(p.startswith("<%s\\b" % tag) for p in ignored):
      extract.ignoreTag(tag)
  # <includeonly> text shows only where the page is transcluded, not in it.
  if "includeonly" not in extract.discardElements:
    extract.discardElements.append("includeonly")


_configure_extractor()


# ---------------------------------------------------------------------------
# Reading the dump.


def iter_pages(path, on_progress=None):
  """Yields every <page> of a MediaWiki export (.xml or .xml.bz2) as a Page.

  Streams with iterparse and frees each page once read, so memory stays flat
  on a full dump. Raises InputError for a missing, empty, truncated or
  corrupt file, malformed XML or an unsupported export version, wherever in
  the file the problem is: a dump is never silently cut short.

  on_progress: optional callable, given the number of bytes of the file (as
  stored, i.e. compressed) consumed so far after each page; for rate and ETA.
  """
  path = os.fspath(path)
  compressed = path.endswith(".bz2")
  try:
    raw = open(path, "rb")
  except OSError as e:
    raise InputError(path, f"cannot open: {e.strerror or e}") from None
  stream = bz2.open(raw, "rb") if compressed else raw
  with raw, stream:
    try:
      # An empty .bz2 file would otherwise read as a truncated stream.
      if os.path.getsize(path) == 0 or not stream.peek(1):
        raise InputError(path, "empty file: no XML content")
      for page in _parse_pages(path, stream):
        yield page
        if on_progress is not None:
          on_progress(raw.tell())
    except EOFError:
      raise InputError(
          path, "truncated bz2 file: the compressed stream ends before its "
          "end-of-stream marker (incomplete download?)") from None
    except ElementTree.ParseError as e:
      raise InputError(path, _describe_parse_error(e)) from None
    except OSError as e:
      what = "corrupt bz2 data" if compressed else "read error"
      raise InputError(path, f"{what}: {e}") from None


def _parse_pages(path, stream):
  """Yields the Pages of an open export, checking its root element first."""
  events = ElementTree.iterparse(stream, events=("start", "end"))
  _, root = next(events)
  xmlns = _check_root(path, root)
  page_tag, siteinfo_tag = xmlns + "page", xmlns + "siteinfo"
  site = site_from_file_name(path)
  for event, elem in events:
    if event == "end" and elem.tag == siteinfo_tag:
      site = site_from_base(elem.findtext(xmlns + "base")) or site
    elif event == "end" and elem.tag == page_tag:
      yield _page_from_element(path, elem, xmlns)._replace(site=site)
      # Pages are the root's children: dropping them frees everything read.
      root.clear()


def site_from_base(base):
  """The article base URL of siteinfo's <base> (its main page's URL), or None:
  https://bg.wikipedia.org/wiki/Начална_страница -> https://bg.wikipedia.org/wiki"""
  base = (base or "").strip()
  if "://" not in base or "/" not in base.split("://", 1)[1]:
    return None
  return base.rsplit("/", 1)[0]


def site_from_file_name(path):
  """The article base URL that a Wikimedia dump's file name implies (bgwiki-... ->
  https://bg.wikipedia.org/wiki; zh_min_nanwiki -> zh-min-nan), else URL_BASE."""
  match = _WIKI_CODE_RE.match(os.path.basename(path))
  if not match:
    return URL_BASE
  return f"https://{match.group(1).replace('_', '-')}.wikipedia.org/wiki"


def _check_root(path, root):
  """Returns the root's '{namespace}' prefix; raises unless 0.10 or 0.11."""
  xmlns, _, name = root.tag.rpartition("}")
  xmlns = xmlns + "}" if xmlns else ""
  if name != "mediawiki":
    raise InputError(
        path, f"unsupported MediaWiki export format: root element is <{name}>,"
        " not <mediawiki> (expected export version 0.10 or 0.11)")
  version = root.get("version")
  if version is None:
    found = re.search(r"export-([0-9.]+)/", xmlns)
    version = found.group(1) if found else "unknown"
  if version not in SUPPORTED_EXPORT_VERSIONS:
    raise InputError(
        path, f"unsupported MediaWiki export format version {version} "
        "(expected 0.10 or 0.11)")
  return xmlns


def _page_from_element(path, elem, xmlns):
  """Builds a Page from a complete <page> element (its last revision).

  A page missing its revision or numeric ids is returned with `error` set:
  one broken page among good ones is skipped and counted, not fatal.
  """
  del path
  title = elem.findtext(xmlns + "title") or ""
  revisions = elem.findall(xmlns + "revision")
  if not revisions:
    return _broken(title, "no <revision>")
  revision = revisions[-1]
  fields = {}
  for name, parent in (("id", elem), ("revid", revision), ("ns", elem)):
    value = parent.findtext(xmlns + ("id" if name == "revid" else name))
    try:
      fields[name] = int(value)
    except (TypeError, ValueError):
      return _broken(title, f"<{name}> is missing or not an integer ({value!r})")
  return Page(title=title, redirect=elem.find(xmlns + "redirect") is not None,
              text=revision.findtext(xmlns + "text") or "", **fields)


def _broken(title, why):
  return Page(id=-1, revid=-1, title=title, ns=0, redirect=False, text="",
              error=f"page {title!r}: {why}")


_NO_ELEMENTS = expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS]


def _describe_parse_error(error):
  """One line saying where the XML is malformed and how."""
  line, column = error.position
  reason = expat.ErrorString(error.code)
  if error.code == _NO_ELEMENTS and line > 1:
    reason += " (the document ends before its root element closes: truncated?)"
  return f"malformed XML at line {line}, column {column}: {reason}"


# ---------------------------------------------------------------------------
# Cleaning one page.

_REDIRECT_RE = re.compile(r"\s*#redirect\b", re.IGNORECASE)
_DISAMBIG_TITLE_RE = re.compile(r"\(disambiguation\)\s*$", re.IGNORECASE)
# {{Disambiguation}}, {{disambig|geo}}, {{Dab}}, {{hndis|...}}, ... and the
# magic word their expansion adds. Set-index pages ({{surname}}, {{SIA}}) are
# articles, so they are kept (their lists mostly clean away to too_short).
_DISAMBIG_MARK_RE = re.compile(
    r"\{\{\s*(?:template\s*:\s*)?(?:disambiguation|disambig|disamb|dab|"
    r"hndis|geodis|numberdis|disambiguation[ _]cleanup|"
    r"(?:human|place)[ _]name[ _]disambiguation)\s*(?:\||\}\})"
    r"|__DISAMBIG__", re.IGNORECASE)
# wikiextractor only drops <ref> elements whose attributes have no '/', so a
# <ref name="RFE/RL"> citation would leak; a <ref> never contains another.
_REF_RE = re.compile(
    r"<ref\b[^>]*?/\s*>|<ref\b[^>]*>(?:(?!<ref\b).)*?</ref\s*>",
    re.IGNORECASE | re.DOTALL)
_LINK_DELIMITER_RE = re.compile(r"\[\[|\]\]")


def clean_page(page, min_chars):
  """Returns (doc, None) for an article worth keeping, else (None, reason).

  doc is {"id", "revid", "title", "url", "text"} (all str), where text is the
  NFC-normalised prose, one paragraph (or section heading) a line. reason is
  one of DROP_REASONS. A page that makes wikiextractor raise is reported as
  PARSE_ERROR rather than raised, so one odd page can't stop a dump.
  """
  if page.error:
    return None, MALFORMED_PAGE
  reason = _drop_reason(page)
  if reason:
    return None, reason
  try:
    text = _plain_text(page)
  except Exception:  # pylint: disable=broad-except
    return None, PARSE_ERROR
  if len(text) < min_chars:
    return None, TOO_SHORT
  return {
      "id": str(page.id),
      "revid": str(page.revid),
      "title": unicodedata.normalize("NFC", page.title),
      "url": f"{page.site}?curid={page.id}",
      "text": text,
  }, None


def _drop_reason(page):
  """Why the page is no article, judged on the raw wikitext; None if it is."""
  if page.redirect or _REDIRECT_RE.match(page.text):
    return REDIRECT
  if page.ns != 0:
    return NON_ARTICLE_NAMESPACE
  if (_DISAMBIG_TITLE_RE.search(page.title) or
      _DISAMBIG_MARK_RE.search(page.text)):
    return DISAMBIGUATION
  return None


def _plain_text(page):
  """The page's prose: paragraphs a line each, no empty ones, NFC."""
  extractor = extract.Extractor(page.id, page.revid, page.site, page.title, [])
  # No template expansion: it needs every template's definition, collected
  # by a pass over the whole dump, and we want templates gone anyway.
  paragraphs = extractor.clean_text(
      _prepare_wikitext(page.text), expand_templates=False, html_safe=False)
  lines = (paragraph.strip() for paragraph in paragraphs)
  return unicodedata.normalize("NFC", "\n".join(line for line in lines if line))


def _prepare_wikitext(text):
  """Removes what wikiextractor's cleaner would mishandle, in MediaWiki order.

  Comments go first (they may hide '}}' or '<ref>'), then references. Then
  templates, tables and external links go with wikiextractor's own functions,
  in clean_text's order (its repeat of them is then a no-op), so that unclosed
  '[[' are found exactly as its internal-link matcher will see them.
  """
  text = extract.comment.sub("", text)
  text = _REF_RE.sub("", text)
  text = extract.dropNested(text, r"{{", r"}}")
  text = extract.dropNested(text, r"{\|", r"\|}")
  text = extract.replaceExternalLinks(text)
  return _drop_unclosed_link_openers(text)


def _drop_unclosed_link_openers(text):
  """Deletes every '[[' that no ']]' closes, e.g. a typo '[[Foo].'.

  wikiextractor's link matcher (findBalanced) waits for an unclosed '[['
  until the end of the page, so every later link, File: caption and
  Category: tag would stay as raw markup. Pairing '[['/']]' the same way and
  deleting only the openers that never close changes no other link.
  """
  unclosed = []
  for match in _LINK_DELIMITER_RE.finditer(text):
    if match.group() == "[[":
      unclosed.append(match.start())
    elif unclosed:
      unclosed.pop()
  if not unclosed:
    return text
  pieces, previous = [], 0
  for start in unclosed:
    pieces.append(text[previous:start])
    previous = start + 2
  pieces.append(text[previous:])
  return "".join(pieces)

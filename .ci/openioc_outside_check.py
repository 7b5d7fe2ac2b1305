"""Checks OpenIOC 1.1 documents with tools written elsewhere: Mandiant's ioc_writer and MITRE's
openioc-to-stix (both from PyPI), then writes what they made of each for stix-validator.

For each document:
  1. ioc_writer (Mandiant's OpenIOC library) parses it as OpenIOC 1.1 (root OpenIOC, one
     top-level OR under criteria) and downgrades it to OpenIOC 1.0 with its DowngradeManager,
     which must keep every item (nothing pruned: no 1.1-only condition or preserve-case, the
     metadata 1.0 requires present);
  2. openioc-to-stix (MITRE's converter) turns the 1.0 document into a STIX 1.2 package of
     CybOX objects: every IndicatorItem must map to a CybOX object (a term it does not know
     becomes a "not translated" note), and the value of each term the converter carries over
     (PortItem/remoteIP, DnsEntryItem/Host, FileItem/Md5sum|Sha1sum|Sha256sum) must be in the
     result. Network/DNS is recognised but its value is lost inside the converter (it fills an
     HTTP Host field it never attaches), so only its object is required.
  3. The packages are written to OUT_DIR for stix-validator (STIX 1.2 / CybOX 2.1 schemas).

Usage: openioc_outside_check.py OUT_DIR FILE...; exits 1 when any document fails.
"""
import logging
import pathlib
import shutil
import sys
import tempfile

from ioc_writer import ioc_api
from ioc_writer.managers.downgrade_11 import DowngradeManager
from lxml import etree
from mixbox import idgen, namespaces
from openioc2stix import translate

NS_11 = "http://openioc.org/schemas/OpenIOC_1.1"
NS_CYBOX = "http://cybox.mitre.org/cybox-2"
CARRIED = {
    "PortItem/remoteIP",
    "DnsEntryItem/Host",
    "FileItem/Md5sum",
    "FileItem/Sha1sum",
    "FileItem/Sha256sum",
}
KNOWN = CARRIED | {"Network/DNS"}


def terms(path):
    """(search, content) of every IndicatorItem, read with lxml from the 1.1 document."""
    root = etree.parse(str(path), etree.XMLParser(huge_tree=True)).getroot()
    out = []
    for item in root.iter(f"{{{NS_11}}}IndicatorItem"):
        context = item.find(f"{{{NS_11}}}Context")
        content = item.find(f"{{{NS_11}}}Content")
        out.append((context.get("search"), (content.text or "").strip()))
    return out


def check(path, work, out_dir):
    """The problems found with one document (empty: it passed)."""
    problems = []
    one = work / path.name.replace(".xml", "")
    one.mkdir()
    ioc_file = one / "document.ioc"
    shutil.copyfile(path, ioc_file)

    try:
        ioc = ioc_api.IOC(str(ioc_file))
    except ioc_api.IOCParseError as e:
        return [f"ioc_writer cannot parse it: {e}"]
    if ioc.top_level_indicator is None:
        return ["ioc_writer finds no single top-level Indicator under criteria"]
    if ioc.top_level_indicator.get("operator", "").upper() != "OR":
        problems.append("the top-level Indicator is not an OR")

    manager = DowngradeManager()
    if manager.insert(str(ioc_file)) or len(manager) != 1:
        return problems + ["ioc_writer's DowngradeManager cannot load it"]
    errors = manager.convert_to_10()
    iocid = next(iter(manager.iocs))
    if errors:
        return problems + [f"ioc_writer cannot downgrade it to OpenIOC 1.0: {errors}"]
    if iocid in manager.null_pruned_iocs or iocid in manager.pruned_11_iocs:
        problems.append("ioc_writer had to drop items to downgrade it (1.1-only conditions?)")
    v10 = one / "1.0"
    v10.mkdir()
    manager.iocs_10[iocid].write_ioc_to_file(output_dir=str(v10), force=True)
    (ioc10,) = v10.glob("*.ioc")

    try:
        package = translate.to_stix(str(ioc10))
    except Exception as e:  # the converter raises bare Exceptions
        return problems + [f"openioc-to-stix cannot convert it: {e}"]
    xml = package.to_xml()
    stix_path = out_dir / path.name.replace(".openioc.xml", ".from-openioc.stix.xml")
    stix_path.write_bytes(xml)

    converted = etree.fromstring(xml, etree.XMLParser(huge_tree=True))
    objects = len(list(converted.iter(f"{{{NS_CYBOX}}}Object")))
    untranslated = [
        d.text
        for d in converted.iter(f"{{{NS_CYBOX}}}Description")
        if d.text and "not translated" in d.text
    ]
    values = {t.strip() for t in converted.itertext() if t.strip()}
    items = terms(path)
    if not items:
        problems.append("no IndicatorItem")
    if untranslated:
        problems.append(f"openioc-to-stix could not map {len(untranslated)} items: {untranslated[0]}")
    if objects != len(items):
        problems.append(f"{len(items)} items became {objects} CybOX objects")
    for search, content in items:
        if search not in KNOWN:
            problems.append(f"an item searches {search}, a term this check does not know")
        elif search in CARRIED and content not in values:
            problems.append(f"{search} {content!r} is not in the converted package")
    return problems


def main(argv):
    if len(argv) < 3:
        print("usage: openioc_outside_check.py OUT_DIR FILE...", file=sys.stderr)
        return 2
    # The tools log every step at INFO; their warnings and errors still show.
    logging.basicConfig(level=logging.WARNING)
    # As the converter's own command line does: the ids it makes are in this namespace.
    idgen.set_id_namespace(namespaces.Namespace("http://openioc.org/openioc", "openioc", ""))
    out_dir = pathlib.Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in argv[2:]:
            path = pathlib.Path(name)
            problems = check(path, pathlib.Path(tmp), out_dir)
            for p in problems:
                print(f"{path}: {p}", file=sys.stderr)
            bad += bool(problems)
    total = len(argv) - 2
    if bad:
        print(f"openioc-outside-check: {bad} of {total} OpenIOC documents failed", file=sys.stderr)
        return 1
    print(
        f"openioc-outside-check: {total} OpenIOC documents parsed and downgraded by ioc_writer, "
        "converted to CybOX by openioc-to-stix with every item and value"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

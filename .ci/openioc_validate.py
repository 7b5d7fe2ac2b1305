"""Validates OpenIOC documents against an XSD with lxml (installed with stix-validator).

Usage: openioc_validate.py SCHEMA.xsd FILE...; exits 1 when any file is invalid.
"""
import sys

from lxml import etree


def main(argv):
    if len(argv) < 3:
        print("usage: openioc_validate.py SCHEMA.xsd FILE...", file=sys.stderr)
        return 2
    schema = etree.XMLSchema(etree.parse(argv[1]))
    bad = 0
    for path in argv[2:]:
        try:
            doc = etree.parse(path, etree.XMLParser(huge_tree=True))
        except etree.XMLSyntaxError as e:
            print(f"{path}: not well-formed: {e}", file=sys.stderr)
            bad += 1
            continue
        if not schema.validate(doc):
            bad += 1
            for err in schema.error_log:
                print(f"{path}:{err.line}: {err.message}", file=sys.stderr)
    if bad:
        print(f"openioc-validate: {bad} of {len(argv) - 2} OpenIOC documents invalid", file=sys.stderr)
        return 1
    print(f"openioc-validate: {len(argv) - 2} OpenIOC documents valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

//! Planning one indicator: what its document needs, decided from the indicator, the job and
//! what the source holds. No I/O here; the planner acts on the decision.

use crate::intel::Format;
use crate::intel::{self, Invalid, Package};
use crate::tc::model::Indicator;
use crate::tc::Filters;

use super::index::{SourceIndex, GONE, OTHER_FORMAT, SEEN};

/// What one indicator from the pull means for the source.
#[derive(Debug)]
pub(super) enum Decision {
    /// Not an Address, File or Host: never sent.
    OtherType,
    /// The job's filters say no (TC sent it anyway, e.g. an exclude tag): its document, if the
    /// source holds one that is not already handled, goes.
    Rejected {
        doc_id: Option<i64>,
        why: String,
    },
    /// Its value cannot be sent (not an IP, a malformed hash...).
    Invalid(Box<Invalid>),
    /// Met already in this run (TC paging overlap, or two indicators with one identity).
    Repeat,
    /// The source holds it as it would be rendered now.
    Unchanged,
    Create(Box<Package>),
    /// The content changed. `verify`: the listing could not tell (no rev, the md5 differs),
    /// so the stored marker is worth a look before rewriting.
    Update {
        doc_id: i64,
        pkg: Box<Package>,
        verify: bool,
    },
    /// The document is in the other format: a new one first, then the old one goes.
    Replace {
        old_doc_id: i64,
        pkg: Box<Package>,
    },
}

/// Decides for one indicator and records in `index` that the run met it.
pub(super) fn decide(
    ind: &Indicator,
    filters: &Filters,
    format: Format,
    index: &mut SourceIndex,
) -> Decision {
    let Some(kind) = ind.kind() else {
        return Decision::OtherType;
    };
    if let Some(why) = filters.rejection(ind) {
        let doc_id = intel::identity_of(&ind.owner_name, kind, &ind.summary)
            .ok()
            .and_then(|id| index.take_for_removal(id.as_u128()));
        return Decision::Rejected { doc_id, why };
    }
    let pkg = match intel::render(ind, format) {
        Ok(p) => p,
        Err(invalid) => return Decision::Invalid(Box::new(invalid)),
    };
    let key = pkg.identity.as_u128();
    let rev = pkg.rev.0;
    let md5 = pkg.md5_prefix();
    let Some(e) = index.map.get_mut(&key) else {
        if index.created.insert(key, ()).is_some() {
            return Decision::Repeat;
        }
        return Decision::Create(Box::new(pkg));
    };
    if e.flags & SEEN != 0 {
        return Decision::Repeat;
    }
    e.flags |= SEEN;
    if e.flags & OTHER_FORMAT != 0 {
        e.flags |= GONE;
        return Decision::Replace {
            old_doc_id: e.doc_id,
            pkg: Box::new(pkg),
        };
    }
    if e.rev == rev || (e.md5 != 0 && e.md5 == md5) {
        return Decision::Unchanged;
    }
    Decision::Update {
        doc_id: e.doc_id,
        pkg: Box::new(pkg),
        verify: e.rev == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tanium::model::IntelDoc;
    use crate::tc::model::IndicatorType;

    fn host(id: i64, name: &str) -> Indicator {
        Indicator {
            id,
            owner_name: "Org".into(),
            type_name: "Host".into(),
            summary: name.into(),
            host_name: Some(name.into()),
            confidence: Some(60),
            tags: vec!["APT".into()],
            last_modified: "2026-11-01T00:00:00Z".into(),
            ..Indicator::default()
        }
    }

    /// A source holding `ind` as rendered in `format`, listed with or without its description.
    fn holding(ind: &Indicator, format: Format, described: bool) -> SourceIndex {
        let p = intel::render(ind, format).unwrap();
        let mut index = SourceIndex::default();
        index.add(
            IntelDoc {
                id: 41,
                source_id: Some(1),
                name: p.name.clone(),
                intrinsic_id: Some(p.identity.to_string()),
                md5: Some(p.md5_hex()),
                description: described.then(|| p.description.clone()),
                kind: Some(p.type_header().into()),
                ..IntelDoc::default()
            },
            Format::Stix,
        );
        index
    }

    fn all() -> Filters {
        Filters {
            types: IndicatorType::ALL.to_vec(),
            ..Filters::default()
        }
    }

    #[test]
    fn new_unchanged_and_repeated() {
        let mut empty = SourceIndex::default();
        let a = host(1, "a.example");
        assert!(matches!(
            decide(&a, &all(), Format::Stix, &mut empty),
            Decision::Create(_)
        ));
        assert!(matches!(
            decide(&a, &all(), Format::Stix, &mut empty),
            Decision::Repeat
        ));
        for described in [true, false] {
            let mut index = holding(&a, Format::Stix, described);
            assert!(matches!(
                decide(&a, &all(), Format::Stix, &mut index),
                Decision::Unchanged
            ));
            assert!(matches!(
                decide(&a, &all(), Format::Stix, &mut index),
                Decision::Repeat
            ));
        }
    }

    #[test]
    fn a_change_is_an_update_verified_only_when_the_listing_has_no_rev() {
        let a = host(1, "a.example");
        let changed = Indicator {
            confidence: Some(61),
            ..a.clone()
        };
        for (described, verify_wanted) in [(true, false), (false, true)] {
            let mut index = holding(&a, Format::Stix, described);
            match decide(&changed, &all(), Format::Stix, &mut index) {
                Decision::Update {
                    doc_id: 41, verify, ..
                } => assert_eq!(verify, verify_wanted),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn another_format_is_replaced() {
        let a = host(1, "a.example");
        let mut index = holding(&a, Format::OpenIoc, true);
        match decide(&a, &all(), Format::Stix, &mut index) {
            Decision::Replace {
                old_doc_id: 41,
                pkg,
            } => {
                assert_eq!(pkg.format, Format::Stix)
            }
            other => panic!("{other:?}"),
        }
        assert!(
            index.take_unseen().is_empty(),
            "the old one is already going"
        );
    }

    #[test]
    fn rejected_by_the_filters_takes_the_document_once() {
        let a = host(1, "a.example");
        let filters = Filters {
            exclude_tags: vec!["apt".into()],
            ..all()
        };
        let mut index = holding(&a, Format::Stix, false);
        match decide(&a, &filters, Format::Stix, &mut index) {
            Decision::Rejected {
                doc_id: Some(41),
                why,
            } => assert_eq!(why, "has the exclude tag APT"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&a, &filters, Format::Stix, &mut index),
            Decision::Rejected { doc_id: None, .. }
        ));
    }

    #[test]
    fn other_types_and_invalid_values_are_never_sent() {
        let mut index = SourceIndex::default();
        let url = Indicator {
            type_name: "URL".into(),
            ..host(2, "http://x")
        };
        assert!(matches!(
            decide(&url, &all(), Format::Stix, &mut index),
            Decision::OtherType
        ));
        let bad = Indicator {
            type_name: "Address".into(),
            ip: Some("not-an-ip".into()),
            ..host(3, "not-an-ip")
        };
        assert!(matches!(
            decide(&bad, &all(), Format::Stix, &mut index),
            Decision::Invalid(_)
        ));
        assert!(index.created.is_empty());
    }
}

//! Planning one indicator: what its document needs, decided from the selection's verdict and
//! what the source holds. No I/O here; the planner acts on the decision.

use std::collections::{BTreeMap, BTreeSet};

use crate::intel::{self, Package};
use crate::tc::model::{Indicator, IndicatorType};

use crate::sync::cause::Cause;
use crate::sync::index::{SourceIndex, GONE, OTHER_FORMAT, SEEN};
use crate::sync::select::{select, NotSent, Selection, Verdict};

/// What one indicator from the pull means for the source.
#[derive(Debug)]
pub(super) enum Decision {
    /// The selection does not send it: its document, when the source holds one that is not
    /// already handled (`doc_id`), goes for the verdict's cause.
    NotSent {
        why: NotSent,
        doc_id: Option<i64>,
    },
    /// Met already in this run (TC paging overlap, or two indicators with one identity).
    Repeat,
    /// The source holds it as it would be rendered now (`labels`: its labels as listed).
    Unchanged {
        doc_id: i64,
        labels: u32,
    },
    Create(Box<Package>),
    /// The content changed. `verify`: the listing could not tell (no rev, the md5 differs),
    /// so the stored marker is worth a look before rewriting.
    Update {
        doc_id: i64,
        pkg: Box<Package>,
        verify: bool,
        labels: u32,
    },
    /// Taking the source over: a document this job did not make covers exactly this
    /// indicator; it is rewritten in place, keeping its Tanium id (and the alerts linked to
    /// it). The job's own document for the indicator, when it made one before, then goes.
    Adopt {
        doc_id: i64,
        pkg: Box<Package>,
        replaces: Option<i64>,
    },
    /// The document is in the other format: a new one first, then the old one goes.
    Replace {
        old_doc_id: i64,
        pkg: Box<Package>,
    },
}

/// Decides for one indicator and records in `index` that the run met it. `cap`: an
/// incremental run under Maximum Indicators adds documents only while the source holds fewer
/// (nothing is evicted).
pub(super) fn decide(
    ind: &Indicator,
    sel: &Selection,
    cap: Option<u64>,
    index: &mut SourceIndex,
) -> Decision {
    let format = sel.format;
    let pkg = match select(ind, sel, |i| intel::render(i, format)) {
        Verdict::Sent(pkg) => pkg,
        Verdict::NotSent(why) => {
            let doc_id = match &why {
                NotSent::Out {
                    identity: Some(id), ..
                } => index.take_for_removal(*id),
                _ => None,
            };
            return Decision::NotSent { why, doc_id };
        }
    };
    let key = pkg.identity.as_u128();
    // An adopted document keeps its root id: rendered otherwise, Tanium would file it anew.
    let pkg = match index.roots.get(&key) {
        Some(root) => intel::render_adopted(ind, format, root).unwrap_or(pkg),
        None => pkg,
    };
    let rev = pkg.rev.0;
    let md5 = pkg.md5_prefix();
    let Some(e) = index.map.get_mut(&key) else {
        return new_to_source(ind, pkg, format, cap, index);
    };
    if e.flags & SEEN != 0 {
        return Decision::Repeat;
    }
    e.flags |= SEEN;
    if let Some((doc_id, pkg)) = adopt(ind, &pkg, format, &mut index.adoptable, &mut index.adopted)
    {
        e.flags |= GONE;
        return Decision::Adopt {
            doc_id,
            pkg,
            replaces: Some(e.doc_id),
        };
    }
    if e.flags & OTHER_FORMAT != 0 {
        e.flags |= GONE;
        return Decision::Replace {
            old_doc_id: e.doc_id,
            pkg: Box::new(pkg),
        };
    }
    if e.rev == rev || (e.md5 != 0 && e.md5 == md5) {
        return Decision::Unchanged {
            doc_id: e.doc_id,
            labels: e.labels,
        };
    }
    Decision::Update {
        doc_id: e.doc_id,
        pkg: Box::new(pkg),
        verify: e.rev == 0,
        labels: e.labels,
    }
}

/// An indicator the source holds no document of: a new document (or one adopted), while the
/// cap allows.
fn new_to_source(
    ind: &Indicator,
    pkg: Package,
    format: intel::Format,
    cap: Option<u64>,
    index: &mut SourceIndex,
) -> Decision {
    let key = pkg.identity.as_u128();
    if index.created.contains_key(&key) {
        return Decision::Repeat;
    }
    let held = (index.map.len() + index.created.len()) as u64;
    if cap.is_some_and(|cap| held >= cap) {
        let why = NotSent::Out {
            identity: None,
            title: pkg.name,
            cause: Cause::OverCap,
        };
        return Decision::NotSent { why, doc_id: None };
    }
    index.created.insert(key, ());
    match adopt(ind, &pkg, format, &mut index.adoptable, &mut index.adopted) {
        Some((doc_id, pkg)) => Decision::Adopt {
            doc_id,
            pkg,
            replaces: None,
        },
        None => Decision::Create(Box::new(pkg)),
    }
}

/// The document this job did not make that covers exactly this indicator, when there is one:
/// its id, and the indicator rendered under its root id. It is adopted.
fn adopt(
    ind: &Indicator,
    pkg: &Package,
    format: intel::Format,
    adoptable: &mut BTreeMap<(IndicatorType, String), (i64, String)>,
    adopted: &mut BTreeSet<i64>,
) -> Option<(i64, Box<Package>)> {
    let (doc_id, root) = adoptable.remove(&(pkg.kind, pkg.key.clone()))?;
    let pkg = intel::render_adopted(ind, format, &root).ok()?;
    adopted.insert(doc_id);
    Some((doc_id, Box::new(pkg)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intel::Format;
    use crate::safety::Guard;
    use crate::tanium::model::IntelDoc;
    use crate::tc::model::IndicatorType;
    use crate::tc::Filters;

    fn host(id: i64, name: &str) -> Indicator {
        Indicator {
            tags: vec!["APT".into()],
            ..crate::sync::testkit::host(id, name)
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

    fn d(ind: &Indicator, filters: &Filters, format: Format, index: &mut SourceIndex) -> Decision {
        let guard = Guard::default();
        let sel = Selection {
            filters,
            format,
            guard: &guard,
            exclusions: None,
            expired_by: None,
            cutoff: None,
        };
        decide(ind, &sel, None, index)
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
            d(&a, &all(), Format::Stix, &mut empty),
            Decision::Create(_)
        ));
        assert!(matches!(
            d(&a, &all(), Format::Stix, &mut empty),
            Decision::Repeat
        ));
        for described in [true, false] {
            let mut index = holding(&a, Format::Stix, described);
            assert!(matches!(
                d(&a, &all(), Format::Stix, &mut index),
                Decision::Unchanged { .. }
            ));
            assert!(matches!(
                d(&a, &all(), Format::Stix, &mut index),
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
            match d(&changed, &all(), Format::Stix, &mut index) {
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
        match d(&a, &all(), Format::Stix, &mut index) {
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
        match d(&a, &filters, Format::Stix, &mut index) {
            Decision::NotSent {
                doc_id: Some(41),
                why: NotSent::Out { cause, .. },
            } => assert_eq!(cause.to_string(), "has the exclude tag APT"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            d(&a, &filters, Format::Stix, &mut index),
            Decision::NotSent { doc_id: None, .. }
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
            d(&url, &all(), Format::Stix, &mut index),
            Decision::NotSent {
                why: NotSent::OtherType,
                doc_id: None
            }
        ));
        let bad = Indicator {
            type_name: "Address".into(),
            ip: Some("not-an-ip".into()),
            ..host(3, "not-an-ip")
        };
        assert!(matches!(
            d(&bad, &all(), Format::Stix, &mut index),
            Decision::NotSent {
                why: NotSent::Invalid(_),
                doc_id: None
            }
        ));
        assert!(index.created.is_empty());
    }

    #[test]
    fn rails_block_unsafe_values_and_take_their_documents() {
        let a = Indicator {
            type_name: "Address".into(),
            summary: "10.0.0.1".into(),
            ip: Some("10.0.0.1".into()),
            host_name: None,
            ..host(5, "x")
        };
        let mut index = holding(&a, Format::Stix, false);
        let guard = Guard {
            safeguards: true,
            ..Guard::default()
        };
        let sel = Selection {
            filters: &all(),
            format: Format::Stix,
            guard: &guard,
            exclusions: None,
            expired_by: None,
            cutoff: None,
        };
        match decide(&a, &sel, None, &mut index) {
            Decision::NotSent {
                doc_id: Some(41),
                why: NotSent::Out { cause, .. },
            } => assert_eq!(cause.to_string(), "unsafe: private 10.0.0.0/8"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_cap_takes_the_documents_of_those_ranked_beyond_it_and_adds_only_below_it() {
        let scored = |id: i64, score: i64| Indicator {
            threat_assess_score: Some(score),
            ..host(id, &format!("h{id}.example"))
        };
        let (best, second, third) = (scored(2, 900), scored(1, 500), scored(3, 100));
        // A full reconcile under a cap of 2: the third is over it, and its document goes.
        let guard = Guard::default();
        let sel = Selection {
            filters: &all(),
            format: Format::Stix,
            guard: &guard,
            exclusions: None,
            expired_by: None,
            cutoff: Some(crate::sync::select::rank(&second)),
        };
        let mut index = holding(&third, Format::Stix, false);
        assert!(matches!(
            decide(&third, &sel, None, &mut index),
            Decision::NotSent {
                doc_id: Some(41),
                why: NotSent::Out {
                    cause: Cause::OverCap,
                    ..
                }
            }
        ));
        assert!(matches!(
            decide(&best, &sel, None, &mut index),
            Decision::Create(_)
        ));
        // An incremental run adds while the source holds fewer than the cap, never evicts.
        let sel = Selection {
            cutoff: None,
            ..sel
        };
        let mut index = holding(&third, Format::Stix, false);
        assert!(matches!(
            decide(&best, &sel, Some(2), &mut index),
            Decision::Create(_)
        ));
        assert!(matches!(
            decide(&second, &sel, Some(2), &mut index),
            Decision::NotSent { doc_id: None, .. }
        ));
        assert!(matches!(
            decide(&third, &sel, Some(2), &mut index),
            Decision::Unchanged { .. }
        ));
    }
}

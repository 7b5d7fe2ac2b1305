//! Planning one indicator: what its document needs, decided from the indicator, the job and
//! what the source holds. No I/O here; the planner acts on the decision.

use crate::intel::Format;
use crate::intel::{self, Invalid, Package};
use crate::safety::{Block, Guard};
use crate::tc::filter::Rejection;
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
        why: Rejection,
    },
    /// Its value cannot be sent (not an IP, a malformed hash...).
    Invalid(Box<Invalid>),
    /// A safety rail says never (unsafe, or on the Never Send list): its document, if any, goes.
    Blocked {
        doc_id: Option<i64>,
        name: String,
        block: Block,
    },
    /// Beyond Maximum Indicators: ranked after the cap (full reconcile: its document goes), or
    /// new while the source is full (incremental: nothing is evicted).
    OverCap {
        doc_id: Option<i64>,
        name: String,
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

/// Where an indicator ranks for Maximum Indicators: the highest ThreatAssess score first, then
/// the highest rating, the highest confidence, the lowest (oldest) id; unset values rank below
/// any set one. Smaller is better, and ids make it a total order.
pub(super) type Rank = (i64, i64, i64, i64);

pub(super) fn rank(ind: &Indicator) -> Rank {
    let rating = ind.rating.map_or(-1, |r| (r * 100.0).round() as i64);
    (
        -ind.threat_assess_score.unwrap_or(0),
        -rating,
        -ind.confidence.unwrap_or(-1),
        ind.id,
    )
}

/// What decides, besides the indicator and the source, whether and how it is sent.
pub(super) struct Selection<'a> {
    pub filters: &'a Filters,
    pub format: Format,
    pub guard: &'a Guard,
    /// A full reconcile under a cap: the rank of the last indicator that fits.
    pub cutoff: Option<Rank>,
    /// An incremental run under a cap: new documents only while the source holds fewer.
    pub cap: Option<u64>,
}

/// Decides for one indicator and records in `index` that the run met it.
pub(super) fn decide(ind: &Indicator, sel: &Selection, index: &mut SourceIndex) -> Decision {
    let (filters, format) = (sel.filters, sel.format);
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
    // An adopted document keeps its root id: rendered otherwise, Tanium would file it anew.
    let pkg = match index.roots.get(&key) {
        Some(root) => intel::render_adopted(ind, format, root).unwrap_or(pkg),
        None => pkg,
    };
    if let Some(block) = sel.guard.check(kind, &pkg.value) {
        return Decision::Blocked {
            doc_id: index.take_for_removal(key),
            name: pkg.name,
            block,
        };
    }
    if sel.cutoff.is_some_and(|c| rank(ind) > c) {
        return Decision::OverCap {
            doc_id: index.take_for_removal(key),
            name: pkg.name,
        };
    }
    let rev = pkg.rev.0;
    let md5 = pkg.md5_prefix();
    let Some(e) = index.map.get_mut(&key) else {
        if index.created.contains_key(&key) {
            return Decision::Repeat;
        }
        let held = (index.map.len() + index.created.len()) as u64;
        if sel.cap.is_some_and(|cap| held >= cap) {
            return Decision::OverCap {
                doc_id: None,
                name: pkg.name,
            };
        }
        index.created.insert(key, ());
        if let Some((doc_id, root)) = index.adoptable.remove(&(kind, pkg.key.clone())) {
            if let Ok(adopted) = intel::render_adopted(ind, format, &root) {
                index.adopted.insert(doc_id);
                return Decision::Adopt {
                    doc_id,
                    pkg: Box::new(adopted),
                    replaces: None,
                };
            }
        }
        return Decision::Create(Box::new(pkg));
    };
    if e.flags & SEEN != 0 {
        return Decision::Repeat;
    }
    e.flags |= SEEN;
    if let Some((doc_id, root)) = index.adoptable.remove(&(kind, pkg.key.clone())) {
        if let Ok(adopted) = intel::render_adopted(ind, format, &root) {
            e.flags |= GONE;
            index.adopted.insert(doc_id);
            return Decision::Adopt {
                doc_id,
                pkg: Box::new(adopted),
                replaces: Some(e.doc_id),
            };
        }
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

    fn d(ind: &Indicator, filters: &Filters, format: Format, index: &mut SourceIndex) -> Decision {
        let guard = Guard::default();
        let sel = Selection {
            filters,
            format,
            guard: &guard,
            cutoff: None,
            cap: None,
        };
        decide(ind, &sel, index)
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
            Decision::Rejected {
                doc_id: Some(41),
                why,
            } => assert_eq!(why.to_string(), "has the exclude tag APT"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            d(&a, &filters, Format::Stix, &mut index),
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
            d(&url, &all(), Format::Stix, &mut index),
            Decision::OtherType
        ));
        let bad = Indicator {
            type_name: "Address".into(),
            ip: Some("not-an-ip".into()),
            ..host(3, "not-an-ip")
        };
        assert!(matches!(
            d(&bad, &all(), Format::Stix, &mut index),
            Decision::Invalid(_)
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
            cutoff: None,
            cap: None,
        };
        match decide(&a, &sel, &mut index) {
            Decision::Blocked {
                doc_id: Some(41),
                block,
                ..
            } => assert_eq!(block.to_string(), "unsafe: private 10.0.0.0/8"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_cap_ranks_by_score_rating_confidence_then_id() {
        let scored = |id: i64, score: i64, rating: Option<f64>, conf: Option<i64>| Indicator {
            threat_assess_score: Some(score),
            rating,
            confidence: conf,
            ..host(id, &format!("h{id}.example"))
        };
        let mut ranked = [
            scored(1, 500, Some(3.0), Some(50)),
            scored(2, 900, None, None),
            scored(3, 500, Some(4.0), Some(10)),
            scored(4, 500, Some(4.0), Some(90)),
            scored(5, 500, Some(4.0), Some(90)),
            scored(6, 500, None, Some(99)),
        ]
        .to_vec();
        ranked.sort_by_key(rank);
        let order: Vec<i64> = ranked.iter().map(|i| i.id).collect();
        assert_eq!(order, vec![2, 4, 5, 3, 1, 6]);
        // A full reconcile under a cap of 3: the fourth and later are over it.
        let guard = Guard::default();
        let sel = Selection {
            filters: &all(),
            format: Format::Stix,
            guard: &guard,
            cutoff: Some(rank(&ranked[2])),
            cap: None,
        };
        let mut index = holding(&ranked[3], Format::Stix, false);
        assert!(matches!(
            decide(&ranked[3], &sel, &mut index),
            Decision::OverCap {
                doc_id: Some(41),
                ..
            }
        ));
        assert!(matches!(
            decide(&ranked[0], &sel, &mut index),
            Decision::Create(_)
        ));
        // An incremental run adds while the source holds fewer than the cap, never evicts.
        let sel = Selection {
            cutoff: None,
            cap: Some(2),
            ..sel
        };
        let mut index = holding(&ranked[3], Format::Stix, false);
        assert!(matches!(
            decide(&ranked[0], &sel, &mut index),
            Decision::Create(_)
        ));
        assert!(matches!(
            decide(&ranked[1], &sel, &mut index),
            Decision::OverCap { doc_id: None, .. }
        ));
        assert!(matches!(
            decide(&ranked[3], &sel, &mut index),
            Decision::Unchanged { .. }
        ));
    }
}

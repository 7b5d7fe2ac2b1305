use super::*;

fn ind(id: i64, kind: &str, summary: &str) -> Indicator {
    Indicator {
        id,
        owner_name: "Demo; Org".into(),
        type_name: kind.into(),
        summary: summary.into(),
        rating: Some(3.0),
        confidence: Some(60),
        threat_assess_score: Some(512),
        tags: vec!["APT".into(), "C2 <x>".into()],
        last_modified: "2026-11-01T08:00:00Z".into(),
        web_link: Some("https://tc.example/auth/indicators/details?id=1&o=2".into()),
        ..Indicator::default()
    }
}

fn members() -> Vec<Member> {
    [
        ind(1, "Host", "Evil.Example."),
        ind(2, "Address", "2001:DB8::1"),
        ind(3, "Address", "203.0.113.7"),
        ind(
            4,
            "File",
            "d41d8cd98f00b204e9800998ecf8427e : da39a3ee5e6b4b0d3255bfef95601890afd80709",
        ),
    ]
    .iter()
    .map(|i| member(i).unwrap())
    .collect()
}

#[test]
fn keys_read_back_from_their_text_and_ids() {
    let k = BucketKey {
        labels: 0x1f3a_9c2e,
        depth: 5,
        bits: 0b01101,
    };
    assert_eq!(k.to_string(), "1f3a9c2e/01101*");
    for f in [Format::Stix, Format::OpenIoc] {
        assert_eq!(BucketKey::from_id(&k.root_id(f)), Some(k));
    }
    assert_eq!(
        BucketKey::from_id(&BucketKey::root(7).root_id(Format::Stix)),
        Some(BucketKey::root(7))
    );
    assert!(k
        .children()
        .iter()
        .all(|c| k.contains(c) && c.parent() == Some(k)));
    assert!(!k.children()[0].contains(&k.children()[1]));
    let id: u128 = 0b01101 << 123;
    assert!(k.covers(id) && !k.covers(id ^ (1 << 124)));
    assert_eq!(prefix(u128::MAX, 40), (1 << 40) - 1);
}

#[test]
fn a_group_reads_back_as_it_was_written_in_both_formats() {
    let key = BucketKey::on_path(label_set_hash(&["ThreatConnect".into()]), 1 << 127, 1);
    for format in [Format::Stix, Format::OpenIoc] {
        let mut ms = members();
        let doc = render(format, &key, &mut ms, "Src", &["ThreatConnect".into()]);
        let m = marker(&doc.name).unwrap();
        assert_eq!((m.key, m.count, m.digest), (key, 4, doc.digest));
        let back = read(&doc.body).unwrap();
        assert_eq!(back.key, Some(key));
        assert_eq!(back.marker, Some(m));
        assert_eq!(back.members, ms, "{format}");
        // Rendering what was read gives the same bytes.
        let mut again = back.members.clone();
        assert_eq!(
            render(format, &key, &mut again, "Src", &["ThreatConnect".into()]).body,
            doc.body
        );
    }
}

#[test]
fn members_survive_their_text_line_and_changes_change_the_rev() {
    for m in members() {
        assert_eq!(Member::from_line(&m.to_line()), Some(m.clone()));
    }
    let a = member(&ind(1, "Host", "a.example")).unwrap();
    let b = member(&Indicator {
        confidence: Some(61),
        ..ind(1, "Host", "a.example")
    })
    .unwrap();
    assert_eq!(a.identity, b.identity);
    assert_ne!(a.rev, b.rev);
    assert!(a.line.contains("owner Demo, Org; id 1;"), "{}", a.line);
    assert_eq!(a.timestamp(), Some("2026-11-01T08:00:00Z"));
}

#[test]
fn the_digest_ignores_order_and_sees_every_member() {
    let key = BucketKey::root(1);
    let ms = members();
    let pairs: Vec<(Identity, Rev)> = ms.iter().map(|m| (m.identity, m.rev)).collect();
    let mut rev = pairs.clone();
    rev.reverse();
    assert_eq!(
        digest(Format::Stix, &key, &pairs),
        digest(Format::Stix, &key, &rev)
    );
    assert_ne!(
        digest(Format::Stix, &key, &pairs),
        digest(Format::OpenIoc, &key, &pairs)
    );
    assert_ne!(
        digest(Format::Stix, &key, &pairs),
        digest(Format::Stix, &key, &pairs[1..])
    );
}

#[test]
fn a_damaged_group_is_unreadable() {
    let key = BucketKey::root(1);
    let doc = render(Format::OpenIoc, &key, &mut members(), "S", &[]);
    assert!(read(&doc.body.replace("tc-sync:", "tc-snyc:")).is_err());
    assert!(read(&doc.body[..doc.body.len() / 2]).is_err());
    let doc = render(Format::Stix, &key, &mut members(), "S", &[]);
    assert!(read(&doc.body.replace("Address_Value", "Other_Value")).is_err());
}

fn named_member(kind: &str, value: &str) -> Member {
    let ind = Indicator {
        id: 4711,
        owner_name: "Demo; Org".into(),
        type_name: kind.into(),
        summary: value.into(),
        last_modified: "2026-11-01T08:00:00Z".into(),
        ..Indicator::default()
    };
    super::member(&ind).unwrap()
}

#[test]
fn a_member_says_its_tc_id_and_which_matched_values_and_elements_are_its_own() {
    let names = |m: &Member, v: &str| {
        let own = m.match_values();
        match_value_forms(v).iter().any(|f| own.contains(f))
    };
    let host = named_member("Host", "Evil.Example.");
    assert_eq!(host.tc_id(), Some(4711));
    assert!(names(&host, "evil.example") && names(&host, "EVIL.example."));
    assert!(!names(&host, "sub.evil.example") && !names(&host, "1.2.3.4"));
    let ip = named_member("Address", "2001:db8::1");
    assert!(names(&ip, "2001:DB8:0::1") && !names(&ip, "2001:db8::2"));
    let md5 = "d193ea4b8d102d020c02dc45af23ff0d";
    let sha1 = "469e259b884043aedac879a96356fb741f82daa8";
    let file = named_member("File", &format!("{md5} : {sha1}"));
    assert!(names(&file, &sha1.to_uppercase()) && names(&file, md5));
    assert!(!names(&file, "469e259b"));
    let own = |m: &Member, id: &str| {
        element_identity(id).is_some_and(|i| m.element_identities().contains(&i))
    };
    let id = file.identity.to_string();
    assert!(own(&file, &format!("tctr:indicator-{id}")));
    assert!(own(
        &file,
        &format!("tctr:Observable-{}", id.to_uppercase())
    ));
    assert!(own(
        &file,
        &crate::intel::identity::derived(file.identity, "item-1")
    ));
    assert!(!own(
        &file,
        &crate::intel::identity::derived(file.identity, "item-9")
    ));
    assert!(!own(&file, "901388892329936882"));
    assert!(!own(&host, &format!("tctr:indicator-{id}")));
}

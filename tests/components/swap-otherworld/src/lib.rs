//! A valid component that implements some other world than Berth's
//! `service`: the hot-swap tests check that the host refuses it.

wit_bindgen::generate!({
    inline: "
        package test:other;

        world other {
            export answer: func() -> u32;
        }
    ",
});

struct Other;

impl Guest for Other {
    fn answer() -> u32 {
        42
    }
}

export!(Other);

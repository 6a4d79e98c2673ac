//! The cost of one safe-mode request/reply cycle, and of the primitives under it.
//!
//! One realistic follower text message (the shape of the official sample, with a short
//! Chinese and ASCII sentence) is encrypted once at start-up; every measurement then works
//! on those same bytes, so the figures are comparable with each other:
//!
//! - `cycle/a_signature_check`: the URL `signature` and the request's `msg_signature`
//!   recomputed and compared.
//! - `cycle/b_verify_decrypt_parse`: the envelope parsed (`RequestEnvelope::parse_borrowed`,
//!   no copy of `Encrypt`), `msg_signature` verified, the `Encrypt` text decrypted and the
//!   plaintext parsed into an [`Inbound`].
//! - `cycle/c_reply_encrypt_sign`: a text reply rendered for the message, encrypted with a
//!   fixed random prefix, signed, and written as the encrypted reply body, in one buffer
//!   (`EncryptedReply::seal_reply`, what the gateway's `render` calls). The self-check
//!   proves the body byte-identical to the long way with owned strings (`Reply::render`,
//!   `MessageCipher::encrypt`, `Signature::message`, `EncryptedReply::to_xml`).
//! - `cycle/d_full_cycle`: what a gateway does per request, body in, body out: a, b and c
//!   with the request's `msg_signature` verified once (b's verification is a's second half).
//! - `primitives/*`: AES-256-CBC, SHA1 and base64 alone, straight from the `aes`, `cbc`,
//!   `sha1` and `base64` crates, on inputs of exactly the sizes the cycle handles.
//!
//! After criterion, an informal summary (plain `Instant` timing, printed to stderr) gives
//! full cycles per second and their cost relative to the sum of the primitives. It only
//! runs under `cargo bench`, not when `cargo test` runs this target once as a smoke test.
//! See docs/benchmarks.md for how to run it and the figures measured.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use aes::Aes256;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use criterion::{Criterion, Throughput};
use sha1::{Digest, Sha1};

use wechat_proto::{
    AesKey, AppId, EncryptedReply, Inbound, Kind, MessageCipher, Reply, ReplyTarget,
    RequestEnvelope, RequestEnvelopeRef, Signature, Token,
};

/// The EncodingAESKey of the official samples: 43 characters, non-canonical last character.
const ENCODING_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// The AppID of the official samples.
const APP_ID: &str = "wx2c2769f8efd9abc2";
/// A console-style token.
const TOKEN: &str = "spamtest";
/// The query parameters WeChat sends with the request.
const REQUEST_TIMESTAMP: &str = "1409735669";
const REQUEST_NONCE: &str = "1320562132";
/// The timestamp and nonce the gateway puts into its reply.
const REPLY_TIMESTAMP: &str = "1409735670";
const REPLY_NONCE: &str = "1582749361";
/// The 16 random bytes in front of every plaintext; fixed so that runs are identical.
const REQUEST_RANDOM: [u8; 16] = *b"89465c840c5f116f";
const REPLY_RANDOM: [u8; 16] = *b"aaaabbbbccccdddd";

/// A follower's text message, laid out like the official samples (one element per line).
const PLAINTEXT: &str = "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n\
<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n\
<CreateTime>1409735668</CreateTime>\n\
<MsgType><![CDATA[text]]></MsgType>\n\
<Content><![CDATA[你好，请问周末门店几点开门？Thanks!]]></Content>\n\
<MsgId>6054768590064713728</MsgId>\n\
</xml>";

/// The text the account answers with.
const REPLY_TEXT: &str = "您好！周末门店 9:00–21:00 营业，欢迎光临。";

/// Everything a gateway has configured or received before it starts on a request.
struct Fixture {
    token: Token,
    cipher: MessageCipher,
    /// The raw AES key, for the primitive measurements.
    key: [u8; 32],
    /// The request body as posted.
    body: Vec<u8>,
    /// The `Encrypt` text inside `body`.
    request_encrypt: String,
    /// The `signature` query parameter.
    url_signature: String,
    /// The `msg_signature` query parameter.
    msg_signature: String,
    /// The reply to render.
    reply: Reply,
}

impl Fixture {
    fn new() -> Fixture {
        let token = Token::new(TOKEN).expect("token");
        let key = AesKey::parse(ENCODING_AES_KEY).expect("key");
        let cipher = MessageCipher::new(&key, AppId::new(APP_ID).expect("app id"));
        let request_encrypt = cipher.encrypt(PLAINTEXT.as_bytes(), REQUEST_RANDOM);
        let envelope = RequestEnvelope {
            to_user_name: Some("gh_10f6c3c3ac5a".to_owned()),
            encrypt: request_encrypt.clone(),
        };
        let url_signature = Signature::url(&token, REQUEST_TIMESTAMP, REQUEST_NONCE).to_hex();
        let msg_signature =
            Signature::message(&token, REQUEST_TIMESTAMP, REQUEST_NONCE, &request_encrypt).to_hex();
        Fixture {
            token,
            cipher,
            key: *key.as_bytes(),
            body: envelope.to_xml().into_bytes(),
            request_encrypt,
            url_signature,
            msg_signature,
            reply: Reply::Text {
                content: REPLY_TEXT.to_owned(),
            },
        }
    }

    /// (a) Both signatures of the request.
    fn check_signatures(&self, encrypt: &str) -> bool {
        let url = Signature::url(&self.token, REQUEST_TIMESTAMP, REQUEST_NONCE)
            .verify(&self.url_signature);
        url.is_ok() && self.verify_message_signature(encrypt)
    }

    fn verify_message_signature(&self, encrypt: &str) -> bool {
        Signature::message(&self.token, REQUEST_TIMESTAMP, REQUEST_NONCE, encrypt)
            .verify(&self.msg_signature)
            .is_ok()
    }

    /// (b) without the signature: the envelope, the decryption and the parse.
    fn open_request(&self) -> (RequestEnvelopeRef<'_>, Inbound) {
        let envelope = RequestEnvelope::parse_borrowed(&self.body).expect("envelope");
        let plaintext = self.cipher.decrypt(&envelope.encrypt).expect("decrypt");
        let inbound = Inbound::parse(&plaintext).expect("inbound");
        (envelope, inbound)
    }

    /// (b) The request's `msg_signature` verified, then opened.
    fn verify_decrypt_parse(&self) -> Inbound {
        let envelope = RequestEnvelope::parse_borrowed(&self.body).expect("envelope");
        assert!(self.verify_message_signature(&envelope.encrypt));
        let plaintext = self.cipher.decrypt(&envelope.encrypt).expect("decrypt");
        Inbound::parse(&plaintext).expect("inbound")
    }

    /// (c) The encrypted reply body for `inbound`.
    fn reply_encrypt_sign(&self, inbound: &Inbound) -> String {
        let target = ReplyTarget::answering(inbound, 1_409_735_670);
        EncryptedReply::seal_reply(
            &self.cipher,
            &self.token,
            REPLY_TIMESTAMP,
            REPLY_NONCE,
            &self.reply,
            &target,
            REPLY_RANDOM,
        )
        .expect("seal")
    }

    /// (c) the long way, with owned strings: what [`Fixture::reply_encrypt_sign`] must
    /// reproduce byte for byte.
    fn reply_encrypt_sign_owned(&self, inbound: &Inbound) -> String {
        let target = ReplyTarget::answering(inbound, 1_409_735_670);
        let plaintext = self.reply.render(&target).expect("render");
        let encrypt = self.cipher.encrypt(plaintext.as_bytes(), REPLY_RANDOM);
        let msg_signature =
            Signature::message(&self.token, REPLY_TIMESTAMP, REPLY_NONCE, &encrypt).to_hex();
        EncryptedReply {
            encrypt,
            msg_signature,
            timestamp: REPLY_TIMESTAMP.to_owned(),
            nonce: REPLY_NONCE.to_owned(),
        }
        .to_xml()
    }

    /// (d) Body in, body out: every check once.
    fn full_cycle(&self) -> String {
        let envelope = RequestEnvelope::parse_borrowed(&self.body).expect("envelope");
        assert!(self.check_signatures(&envelope.encrypt));
        let plaintext = self.cipher.decrypt(&envelope.encrypt).expect("decrypt");
        let inbound = Inbound::parse(&plaintext).expect("inbound");
        self.reply_encrypt_sign(&inbound)
    }

    /// Checks that every measured path does the real work and succeeds, so that a
    /// regression cannot make the benchmark fast by failing early.
    fn self_check(&self) {
        let (envelope, inbound) = self.open_request();
        assert_eq!(envelope.encrypt, self.request_encrypt);
        assert_eq!(
            RequestEnvelope::parse(&self.body).expect("owned envelope"),
            envelope.clone().into_owned()
        );
        assert!(self.check_signatures(&envelope.encrypt));
        assert!(matches!(&inbound.kind, Kind::Text { content } if content.contains("Thanks!")));
        assert_eq!(self.verify_decrypt_parse(), inbound);

        let body = self.full_cycle();
        assert_eq!(body, self.reply_encrypt_sign_owned(&inbound));
        let reply = EncryptedReply::parse(body.as_bytes()).expect("reply body");
        Signature::message(&self.token, &reply.timestamp, &reply.nonce, &reply.encrypt)
            .verify(&reply.msg_signature)
            .expect("reply signature");
        let reply_plaintext = self.cipher.decrypt(&reply.encrypt).expect("reply decrypt");
        let (header, parsed) = Reply::parse(&reply_plaintext).expect("reply parse");
        assert_eq!(header.to_user_name, inbound.header.from_user_name);
        assert_eq!(parsed, self.reply);
    }
}

/// The inputs of the primitives, sized exactly as in the cycle.
struct Primitives {
    aes: Aes256,
    iv: [u8; 16],
    /// The request's AES ciphertext (decoded `Encrypt`).
    request_ciphertext: Vec<u8>,
    /// The reply's padded plaintext, as encrypted by the cycle.
    reply_padded: Vec<u8>,
    /// The reply's AES ciphertext, as base64-encoded by the cycle.
    reply_ciphertext: Vec<u8>,
    /// The request's `Encrypt` text, as base64-decoded by the cycle.
    request_encrypt: String,
    /// The sorted, concatenated inputs of the three SHA1s of a cycle.
    url_signature_input: Vec<u8>,
    request_signature_input: Vec<u8>,
    reply_signature_input: Vec<u8>,
}

impl Primitives {
    fn new(fixture: &Fixture) -> Primitives {
        let iv: [u8; 16] = fixture.key[..16].try_into().expect("iv");
        let aes = Aes256::new(&fixture.key.into());
        let request_ciphertext = STANDARD
            .decode(&fixture.request_encrypt)
            .expect("request base64");

        let body = fixture.full_cycle();
        let reply = EncryptedReply::parse(body.as_bytes()).expect("reply body");
        let reply_ciphertext = STANDARD.decode(&reply.encrypt).expect("reply base64");
        let mut reply_padded = reply_ciphertext.clone();
        cbc::Decryptor::<Aes256>::inner_iv_init(aes.clone(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut reply_padded)
            .expect("reply decrypt");

        let sorted = |parts: &mut [&str]| -> Vec<u8> {
            parts.sort_unstable();
            parts.concat().into_bytes()
        };
        let primitives = Primitives {
            aes,
            iv,
            url_signature_input: sorted(&mut [TOKEN, REQUEST_TIMESTAMP, REQUEST_NONCE]),
            request_signature_input: sorted(&mut [
                TOKEN,
                REQUEST_TIMESTAMP,
                REQUEST_NONCE,
                &fixture.request_encrypt,
            ]),
            reply_signature_input: sorted(&mut [
                TOKEN,
                REPLY_TIMESTAMP,
                REPLY_NONCE,
                &reply.encrypt,
            ]),
            request_ciphertext,
            reply_padded,
            reply_ciphertext,
            request_encrypt: fixture.request_encrypt.clone(),
        };
        // The primitives must reproduce the cycle's own results.
        assert_eq!(primitives.aes_encrypt(), primitives.reply_ciphertext);
        assert_eq!(STANDARD.encode(&primitives.reply_ciphertext), reply.encrypt);
        assert_eq!(
            hex(&Sha1::digest(&primitives.reply_signature_input)),
            reply.msg_signature
        );
        assert_eq!(
            hex(&Sha1::digest(&primitives.url_signature_input)),
            fixture.url_signature
        );
        primitives
    }

    fn aes_decrypt(&self) -> Vec<u8> {
        let mut buffer = self.request_ciphertext.clone();
        cbc::Decryptor::<Aes256>::inner_iv_init(self.aes.clone(), &self.iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buffer)
            .expect("multiple of the block size");
        buffer
    }

    fn aes_encrypt(&self) -> Vec<u8> {
        let mut buffer = self.reply_padded.clone();
        let len = buffer.len();
        cbc::Encryptor::<Aes256>::inner_iv_init(self.aes.clone(), &self.iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut buffer, len)
            .expect("multiple of the block size");
        buffer
    }

    fn sha1(input: &[u8]) -> [u8; 20] {
        Sha1::digest(input).into()
    }

    fn base64_decode(&self) -> Vec<u8> {
        STANDARD.decode(&self.request_encrypt).expect("base64")
    }

    fn base64_encode(&self) -> String {
        STANDARD.encode(&self.reply_ciphertext)
    }

    /// Everything a cycle does at minimum, once: the floor the cycle is compared with.
    fn all(&self) -> usize {
        self.aes_decrypt().len()
            + self.aes_encrypt().len()
            + usize::from(Self::sha1(&self.url_signature_input)[0])
            + usize::from(Self::sha1(&self.request_signature_input)[0])
            + usize::from(Self::sha1(&self.reply_signature_input)[0])
            + self.base64_decode().len()
            + self.base64_encode().len()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn bench_cycle(c: &mut Criterion, fixture: &Fixture) {
    let (envelope, inbound) = fixture.open_request();
    let mut group = c.benchmark_group("cycle");
    group.throughput(Throughput::Elements(1));
    group.bench_function("a_signature_check", |b| {
        b.iter(|| fixture.check_signatures(black_box(&envelope.encrypt)))
    });
    group.bench_function("b_verify_decrypt_parse", |b| {
        b.iter(|| fixture.verify_decrypt_parse())
    });
    group.bench_function("c_reply_encrypt_sign", |b| {
        b.iter(|| fixture.reply_encrypt_sign(black_box(&inbound)))
    });
    group.bench_function("d_full_cycle", |b| b.iter(|| fixture.full_cycle()));
    group.finish();
}

fn bench_primitives(c: &mut Criterion, primitives: &Primitives) {
    let mut group = c.benchmark_group("primitives");
    group.throughput(Throughput::Elements(1));
    group.bench_function("aes256cbc_decrypt_request", |b| {
        b.iter(|| primitives.aes_decrypt())
    });
    group.bench_function("aes256cbc_encrypt_reply", |b| {
        b.iter(|| primitives.aes_encrypt())
    });
    group.bench_function("sha1_url_signature", |b| {
        b.iter(|| Primitives::sha1(black_box(&primitives.url_signature_input)))
    });
    group.bench_function("sha1_request_msg_signature", |b| {
        b.iter(|| Primitives::sha1(black_box(&primitives.request_signature_input)))
    });
    group.bench_function("sha1_reply_msg_signature", |b| {
        b.iter(|| Primitives::sha1(black_box(&primitives.reply_signature_input)))
    });
    group.bench_function("base64_decode_request", |b| {
        b.iter(|| primitives.base64_decode())
    });
    group.bench_function("base64_encode_reply", |b| {
        b.iter(|| primitives.base64_encode())
    });
    group.bench_function("sum_of_all", |b| b.iter(|| primitives.all()));
    group.finish();
}

/// Time per call of `f`: the fastest of many short rounds, and the median round.
///
/// On a shared machine other processes steal whole time slices; the fastest round is the
/// figure least disturbed by them, the median shows how much they disturbed.
fn time_per_call<T>(budget: Duration, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    const CALLS_PER_ROUND: u32 = 200;
    for _ in 0..CALLS_PER_ROUND {
        black_box(f());
    }
    let mut rounds = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget {
        let round = Instant::now();
        for _ in 0..CALLS_PER_ROUND {
            black_box(f());
        }
        rounds.push(round.elapsed() / CALLS_PER_ROUND);
    }
    rounds.sort_unstable();
    (rounds[0], rounds[rounds.len() / 2])
}

/// The informal summary: the four figures, cycles per second and the cycle/primitives
/// ratio, from one quick measurement of each.
fn informal_summary(fixture: &Fixture, primitives: &Primitives) {
    let budget = Duration::from_secs(2);
    let (_, inbound) = fixture.open_request();
    let figures = [
        (
            "a_signature_check",
            time_per_call(budget, || {
                fixture.check_signatures(black_box(&fixture.request_encrypt))
            }),
        ),
        (
            "b_verify_decrypt_parse",
            time_per_call(budget, || fixture.verify_decrypt_parse()),
        ),
        (
            "c_reply_encrypt_sign",
            time_per_call(budget, || fixture.reply_encrypt_sign(black_box(&inbound))),
        ),
        (
            "d_full_cycle",
            time_per_call(budget, || fixture.full_cycle()),
        ),
        (
            "primitives (sum)",
            time_per_call(budget, || primitives.all()),
        ),
    ];
    let nanos = |d: Duration| d.as_secs_f64() * 1e9;
    eprintln!();
    eprintln!(
        "Informal summary: std::time::Instant, not criterion; one thread, {budget:?} per row;"
    );
    eprintln!("\"best\" is the fastest round of 200 calls, \"median\" the median round.");
    eprintln!(
        "  {:<24} {:>9} {:>12} {:>9}",
        "", "best ns", "best /s", "median ns"
    );
    for (name, (best, median)) in &figures {
        eprintln!(
            "  {name:<24} {:>9.0} {:>12.0} {:>9.0}",
            nanos(*best),
            1.0 / best.as_secs_f64(),
            nanos(*median)
        );
    }
    let (cycle_best, cycle_median) = figures[3].1;
    let (floor_best, floor_median) = figures[4].1;
    eprintln!(
        "  full cycles per second: {:.0} best, {:.0} median (target >= 300000 per core)",
        1.0 / cycle_best.as_secs_f64(),
        1.0 / cycle_median.as_secs_f64()
    );
    eprintln!(
        "  d / primitives: {:.2}x best, {:.2}x median (aim <= 1.5x; primitives = AES-256-CBC \
         decrypt + encrypt, 3 SHA1, base64 decode + encode)",
        cycle_best.as_secs_f64() / floor_best.as_secs_f64(),
        cycle_median.as_secs_f64() / floor_median.as_secs_f64()
    );
}

fn main() {
    let fixture = Fixture::new();
    fixture.self_check();
    let primitives = Primitives::new(&fixture);

    let mut criterion = Criterion::default().configure_from_args();
    bench_cycle(&mut criterion, &fixture);
    bench_primitives(&mut criterion, &primitives);
    criterion.final_summary();

    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and only wants the
    // smoke run criterion has just done. A profiling run (`--profile-time`) wants nothing
    // but the profiled routine.
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|arg| arg.split('=').next() == Some(flag));
    if has("--bench") && !has("--profile-time") {
        informal_summary(&fixture, &primitives);
    }
}

//! A hand-written writer of run requests: the same bytes `rmp_serde` writes for a
//! [`RunRequest`] (a property test in `tests/roundtrip.rs` holds them equal), without serde's
//! generic path, which was ~2 % of the dispatcher's CPU per small job (docs/benchmarks.md,
//! "First deliveries skip the lookup, and the job reader").

use super::{RunJob, RunRequest};

/// `request` as `rmp_serde` (`encode`) writes it, into a buffer of `capacity` bytes.
pub(crate) fn write_run_request(request: &RunRequest, capacity: usize) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(capacity));
    w.map_len(2);
    w.str("v");
    w.uint(request.v as u64);
    w.str("jobs");
    w.array_len(request.jobs.len());
    for job in &request.jobs {
        w.run_job(job);
    }
    w.0
}

struct Writer(Vec<u8>);

impl Writer {
    /// The fields serde writes: optional ones only when set, as `skip_serializing_if` says.
    fn run_job(&mut self, job: &RunJob) {
        let fields = 5
            + job.remaining_ms.is_some() as usize
            + job.suspect as usize
            + job.report_existing as usize
            + job.traceparent.is_some() as usize
            + job.tracestate.is_some() as usize;
        self.map_len(fields);
        self.str("payload");
        self.bin(&job.payload);
        self.str("priority");
        self.str(job.priority.as_str());
        self.str("deadline_ms");
        self.uint(job.deadline_ms);
        if let Some(ms) = job.remaining_ms {
            self.str("remaining_ms");
            self.uint(ms);
        }
        self.str("published_ms");
        self.uint(job.published_ms);
        self.str("attempt");
        self.uint(job.attempt as u64);
        if job.suspect {
            self.str("suspect");
            self.0.push(0xc3);
        }
        if job.report_existing {
            self.str("report_existing");
            self.0.push(0xc3);
        }
        if let Some(t) = &job.traceparent {
            self.str("traceparent");
            self.str(t);
        }
        if let Some(t) = &job.tracestate {
            self.str("tracestate");
            self.str(t);
        }
    }

    fn map_len(&mut self, n: usize) {
        self.len_marked(n, 0x80, 0xde, 0xdf);
    }

    fn array_len(&mut self, n: usize) {
        self.len_marked(n, 0x90, 0xdc, 0xdd);
    }

    /// A map or array header: the fix form below 16, else 16 or 32 bits.
    fn len_marked(&mut self, n: usize, fix: u8, m16: u8, m32: u8) {
        if n < 16 {
            self.0.push(fix | n as u8);
        } else {
            self.length(n, None, m16, m32);
        }
    }

    fn str(&mut self, s: &str) {
        if s.len() < 32 {
            self.0.push(0xa0 | s.len() as u8);
        } else {
            self.length(s.len(), Some(0xd9), 0xda, 0xdb);
        }
        self.0.extend_from_slice(s.as_bytes());
    }

    fn bin(&mut self, b: &[u8]) {
        self.length(b.len(), Some(0xc4), 0xc5, 0xc6);
        self.0.extend_from_slice(b);
    }

    /// A marker and a length of 8 (where the type has that form), 16 or 32 bits: the
    /// smallest that holds `n`.
    fn length(&mut self, n: usize, m8: Option<u8>, m16: u8, m32: u8) {
        match m8 {
            Some(m8) if n <= u8::MAX as usize => self.0.extend_from_slice(&[m8, n as u8]),
            _ if n <= u16::MAX as usize => {
                self.0.push(m16);
                self.0.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                self.0.push(m32);
                self.0.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
    }

    /// The smallest encoding of an unsigned integer, as `rmp::encode::write_uint`.
    fn uint(&mut self, v: u64) {
        if v < 128 {
            self.0.push(v as u8);
        } else if v <= u8::MAX as u64 {
            self.0.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= u16::MAX as u64 {
            self.0.push(0xcd);
            self.0.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= u32::MAX as u64 {
            self.0.push(0xce);
            self.0.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            self.0.push(0xcf);
            self.0.extend_from_slice(&v.to_be_bytes());
        }
    }
}

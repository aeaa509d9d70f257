//! Shared Redis round trips: a task that makes one lookup at a time takes, for its next one,
//! every request queued while the previous one was under way ([`next_pass`]). Under load
//! requests overlap and share a round trip; when idle a request finds nothing in flight and
//! goes at once, so nothing waits for company. Used by the intake's lookups
//! (`intake/admit.rs`) and the check of stored results (`stored.rs`).

use tokio::sync::mpsc;

/// The next request and every one already queued behind it; `None` once every sender is
/// gone and the queue is empty.
pub(crate) async fn next_pass<T>(rx: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut pass = vec![first];
    while let Ok(more) = rx.try_recv() {
        pass.push(more);
    }
    Some(pass)
}

#[cfg(test)]
mod tests {
    use super::next_pass;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn a_pass_takes_what_queued_behind_the_first_and_nothing_later() {
        let (tx, mut rx) = mpsc::channel(8);
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        assert_eq!(next_pass(&mut rx).await, Some(vec![0, 1, 2]));
        // A request alone goes alone, without waiting for company.
        tx.try_send(3).unwrap();
        assert_eq!(next_pass(&mut rx).await, Some(vec![3]));
        // What is sent after a pass was taken goes in the next one.
        let waiting = tokio::spawn(async move { next_pass(&mut rx).await.map(|p| (p, rx)) });
        tokio::task::yield_now().await;
        tx.try_send(4).unwrap();
        let (pass, mut rx) = waiting.await.unwrap().unwrap();
        assert_eq!(pass, vec![4]);
        drop(tx);
        assert_eq!(next_pass(&mut rx).await, None);
    }
}

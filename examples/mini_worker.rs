//! The smallest useful worker, as the README shows it: every task's result
//! is its text in capitals. `CONTACT_SERVER` names the server.

use contact_server::client::{ClientError, WorkerBuilder};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let server = std::env::var("CONTACT_SERVER").unwrap_or("127.0.0.1:50051".into());
    let mut worker = WorkerBuilder::new(server)
        .client_id("rust-mini")
        .queues(["default"])
        .connect()
        .await?;
    while let Some(task) = worker.next_task().await {
        let ret = task.text.to_uppercase();
        task.done(ret).await?;
    }
    Ok(())
}

//! The mock provider as a program, for scripts (`scripts/seed-llm.sh`, `scripts/sdk/run.sh`):
//! prints its base URL (`http://127.0.0.1:<port>/v1`) and serves until killed.

#[tokio::main]
async fn main() {
    let mock = tollgate_tests::mock::MockProvider::start().await;
    println!("{}", mock.base_url);
    // Serve until the process is killed.
    std::future::pending::<()>().await;
}

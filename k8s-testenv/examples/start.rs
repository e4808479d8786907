//! Starts three clusters by hand and prints their kubeconfigs, for trying `kubectl` and `helm`
//! against real API servers; Ctrl-C stops them and removes their folders.
//!
//! `cargo run -p mesh-k8s-testenv --example start [-- NAME...]`

use mesh_k8s_testenv::TestEnv;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = if args.is_empty() {
        vec!["c1", "c2", "c3"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    eprintln!("starting {} clusters one after another ...", names.len());
    let env = TestEnv::start(&names)?;
    let bin = env
        .binaries()
        .kubectl
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for cluster in env.clusters() {
        println!(
            "{}\t{}\t{}",
            cluster.name(),
            cluster.server(),
            cluster.kubeconfig().display()
        );
    }
    let all: Vec<String> = env
        .clusters()
        .iter()
        .map(|c| c.kubeconfig().display().to_string())
        .collect();
    eprintln!(
        "\nTry:\n  export PATH={bin}:$PATH KUBECONFIG={}\n  kubectl config get-contexts\n  \
         kubectl --context {} get namespaces\n  helm --kube-context {} list -A\n\
         Logs are in each kubeconfig's folder. Ctrl-C stops the clusters.",
        all.join(":"),
        names[0],
        names[0]
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(tokio::signal::ctrl_c())?;
    eprintln!("stopping ...");
    drop(env);
    Ok(())
}

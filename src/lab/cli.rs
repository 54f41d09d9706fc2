//! `tandem lab up|down|status|demo`.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::{Lab, LabOptions, Node, check_prefix, ip, netns_list};

/// `tandem lab` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct LabArgs {
    /// up | down | status | demo
    pub action: String,
    /// Prefix of every namespace the lab creates.
    #[arg(long, default_value = "tdm")]
    pub prefix: String,
    /// With `up`: build the topology only, start no daemon.
    #[arg(long)]
    pub no_boot: bool,
}

/// `tandem lab ...`.
pub fn command(args: LabArgs) -> ExitCode {
    if let Err(e) = check_prefix(&args.prefix) {
        eprintln!("tandem lab: {e}");
        return ExitCode::from(2);
    }
    let result = match args.action.as_str() {
        "up" => up(&args).map(|lab| {
            println!("lab {} is up", lab.prefix);
            print_hints(&lab);
        }),
        "down" => Lab::attach(&args.prefix).down().map(|()| {
            println!("lab {} is down", args.prefix);
        }),
        "status" => status(&Lab::attach(&args.prefix)),
        "demo" => demo(&args),
        other => {
            eprintln!("tandem lab: unknown action {other:?} (want up, down, status or demo)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem lab {}: {e:#}", args.action);
            ExitCode::FAILURE
        }
    }
}

fn up(args: &LabArgs) -> anyhow::Result<Lab> {
    let opts = LabOptions {
        boot: !args.no_boot,
        ..LabOptions::default()
    };
    Lab::up(&args.prefix, opts)
}

fn demo(args: &LabArgs) -> anyhow::Result<()> {
    let lab = up(&LabArgs {
        no_boot: false,
        ..args.clone()
    })?;
    println!("lab {} is up: both firewalls booted\n", lab.prefix);
    for fw in Node::FIREWALLS {
        for method in ["system.status", "interfaces.list"] {
            let v = lab.ctl(fw, method, json!({}))?;
            println!("== {fw} {method}");
            println!("{}\n", pretty(&v));
        }
    }
    super::demo::carp_failover(&lab)?;
    print_hints(&lab);
    Ok(())
}

fn print_hints(lab: &Lab) {
    let p = &lab.prefix;
    println!("The lab stays up. Look around:");
    println!("  tandem lab status --prefix {p}");
    println!("  ip netns exec {p}-client ping 192.168.1.1");
    for fw in Node::FIREWALLS {
        println!(
            "  tandem ctl --socket {} system.status",
            lab.socket(fw).display()
        );
    }
    println!(
        "Take it down with: tandem lab down --prefix {p}   (or: sudo scripts/demo --down --prefix {p})"
    );
}

fn status(lab: &Lab) -> anyhow::Result<()> {
    let existing = netns_list()?;
    println!("lab {} (run dir {})", lab.prefix, lab.run_dir.display());
    for node in Node::ALL {
        let ns = lab.ns(node);
        if !existing.contains(&ns) {
            println!("{ns}: absent");
            continue;
        }
        println!("{ns}:");
        match ip(&["-n", &ns, "-br", "addr"]) {
            Ok(out) => {
                for line in out.lines() {
                    println!("    {line}");
                }
            }
            Err(e) => println!("    {e:#}"),
        }
        if node.is_firewall() {
            match lab.node_pid(node) {
                None => println!("    tandem: not running"),
                Some(pid) => {
                    let answer = match lab.ctl(node, "system.status", json!({})) {
                        Ok(_) => "answers system.status".to_string(),
                        Err(e) => format!("no answer: {e:#}"),
                    };
                    println!("    tandem: pid {pid}, {answer}");
                }
            }
        }
    }
    Ok(())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

//! The counting job's output, `count <i> <n>` per record (see
//! examples/flink/job), and what it proves: with exactly-once state `n == i + 1`
//! on every line across any failover; the values form one run 0..=max with no
//! gap; after a recovery the job restarts at or before the next value (the
//! print sink is at-least-once: values since the restored checkpoint print again).

/// `(i, n)` of every line, in order.
pub fn parse(output: &str) -> Vec<(u64, u64)> {
    output
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("count ")? + "count ".len()..];
            let mut it = rest.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Where the job restarted: the indices of lines whose value does not follow
/// the line before.
pub fn restarts(lines: &[(u64, u64)]) -> Vec<usize> {
    (1..lines.len())
        .filter(|&k| lines[k].0 != lines[k - 1].0 + 1)
        .collect()
}

/// What is wrong with the output, if anything.
pub fn problems(lines: &[(u64, u64)]) -> Vec<String> {
    let mut p = Vec::new();
    if lines.is_empty() {
        p.push("the job printed nothing".into());
        return p;
    }
    if lines[0].0 != 0 {
        p.push(format!("the first value printed is {}, not 0", lines[0].0));
    }
    for &(i, n) in lines {
        if n != i + 1 {
            p.push(format!(
                "value {i} was counted as {n}: the state lost or repeated a value"
            ));
            break;
        }
    }
    for k in restarts(lines) {
        let (prev, next) = (lines[k - 1].0, lines[k].0);
        if next > prev + 1 {
            p.push(format!(
                "values {} to {} are missing (the job jumped from {prev} to {next})",
                prev + 1,
                next - 1
            ));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_replays_but_loses_nothing() {
        let out = "count 0 1\ncount 1 2\ncount 2 3\n1> count 1 2\ncount 2 3\ncount 3 4\n";
        let lines = parse(out);
        assert_eq!(restarts(&lines), vec![3]);
        assert!(problems(&lines).is_empty());
        let gap = parse("count 0 1\ncount 2 3\n");
        assert!(problems(&gap)[0].contains("missing"));
        let double = parse("count 0 1\ncount 1 3\n");
        assert!(problems(&double)[0].contains("counted as 3"));
    }
}

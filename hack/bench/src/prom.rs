//! Reading one counter from Prometheus text exposition: the sum over all label sets of a
//! metric name. Pure; the bench fetches the text with reqwest.

/// Sum of every sample of `name` (with or without labels) in `text`; `None` when absent.
pub fn sum(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut total = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            match labelled.rsplit_once('}') {
                Some((_, v)) => v,
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            // Another metric whose name starts with `name`.
            continue;
        };
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            total += v;
            found = true;
        }
    }
    found.then_some(total)
}

/// GET `url` and return [`sum`] of `name`.
pub async fn scrape(client: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    sum(&text, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP ironvisor_agent_reconciles_total Reconciles.
# TYPE ironvisor_agent_reconciles_total counter
ironvisor_agent_reconciles_total{result=\"ok\"} 120
ironvisor_agent_reconciles_total{result=\"error\"} 3
ironvisor_agent_reconciles_total_extra 99
ironvisor_agent_rss_bytes 1.5e7
";

    #[test]
    fn a_counter_is_summed_over_its_label_sets() {
        assert_eq!(sum(TEXT, "ironvisor_agent_reconciles_total"), Some(123.0));
    }

    #[test]
    fn an_unlabelled_gauge_in_exponent_form_is_read() {
        assert_eq!(sum(TEXT, "ironvisor_agent_rss_bytes"), Some(15_000_000.0));
    }

    #[test]
    fn a_missing_metric_is_none_not_zero() {
        assert_eq!(sum(TEXT, "ironvisor_operator_decisions_total"), None);
        assert_eq!(sum(TEXT, "ironvisor_agent_reconciles"), None);
    }
}

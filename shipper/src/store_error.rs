//! Object-store failures said once, in words: which store, what it answered, and the fix.
//! `object_store` nests the same failure several times over and quotes an S3 server's XML
//! error body whole; an operator needs the bucket, the answer and what to do.

/// Describes a failure of the store at `url` (with `endpoint`, for S3-compatible servers).
pub fn describe(url: &str, endpoint: Option<&str>, e: &object_store::Error) -> String {
    let text = e.to_string();
    let at = match endpoint {
        Some(ep) => format!("{url} at {ep}"),
        None => url.to_owned(),
    };
    let code = between(&text, "<Code>", "</Code>");
    let message = between(&text, "<Message>", "</Message>");
    let status = text
        .split_once("status code: ")
        .and_then(|(_, rest)| rest.split(':').next())
        .map(str::trim);
    let fix = match code {
        Some("NoSuchBucket") => "create the bucket, or fix store.url",
        Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy"
        }
        _ if text.contains("Connection refused") || text.contains("error sending request") => {
            "check that the store's endpoint is reachable (store.endpoint, AWS_ENDPOINT)"
        }
        _ => "",
    };
    let answer = match (status, code, message) {
        (status, Some(code), message) => format!(
            "the server answered {}{code}{}",
            status.map(|s| format!("{s} ")).unwrap_or_default(),
            message.map(|m| format!(" ({m})")).unwrap_or_default()
        ),
        // No S3 error body: the first line of the message, without its repetitions.
        _ => text
            .split(": Generic")
            .next()
            .unwrap_or(&text)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    if fix.is_empty() {
        format!("store {at}: {answer}")
    } else {
        format!("store {at}: {answer}; {fix}")
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let (_, rest) = text.split_once(open)?;
    rest.split_once(close).map(|(inside, _)| inside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_error_body_is_said_once_with_the_fix() {
        let source: Box<dyn std::error::Error + Send + Sync> = "Error performing list request: Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>".into();
        let e = object_store::Error::Generic {
            store: "S3",
            source,
        };
        let said = describe("s3://missing", Some("http://minio:9000"), &e);
        assert_eq!(
            said,
            "store s3://missing at http://minio:9000: the server answered 404 Not Found NoSuchBucket (The specified bucket does not exist); create the bucket, or fix store.url"
        );
    }
}

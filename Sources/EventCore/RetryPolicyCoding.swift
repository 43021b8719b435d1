/// A retry policy is stored with the work it governs (a process keeps its timeout policy in its own stream),
/// so it encodes to plain JSON: durations as seconds, the backoff as a tagged object.
extension RetryPolicy: Codable {
    private enum CodingKeys: String, CodingKey {
        case maxRetries, backoff, jitter
    }

    /// Decodes a policy and applies the same clamping as ``init(maxRetries:backoff:jitter:)``.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            maxRetries: try container.decode(Int.self, forKey: .maxRetries),
            backoff: try container.decode(Backoff.self, forKey: .backoff),
            jitter: try container.decodeIfPresent(Double.self, forKey: .jitter) ?? 0
        )
    }

    /// Encodes `maxRetries`, `backoff` and `jitter`.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(maxRetries, forKey: .maxRetries)
        try container.encode(backoff, forKey: .backoff)
        try container.encode(jitter, forKey: .jitter)
    }
}

extension RetryPolicy.Backoff: Codable {
    private enum CodingKeys: String, CodingKey {
        case kind, delaySeconds, initialSeconds, incrementSeconds, multiplier, maximumSeconds
    }

    /// Decodes `{"kind": "fixed" | "linear" | "exponential", ...}` with durations in seconds.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        func duration(_ key: CodingKeys) throws -> Duration {
            let seconds = try container.decode(Double.self, forKey: key)
            guard seconds.isFinite, seconds >= 0 else {
                throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "a delay must be a finite, non-negative number of seconds")
            }
            return .seconds(seconds)
        }
        switch try container.decode(String.self, forKey: .kind) {
        case "fixed":
            self = .fixed(try duration(.delaySeconds))
        case "linear":
            self = .linear(initial: try duration(.initialSeconds), increment: try duration(.incrementSeconds), maximum: try duration(.maximumSeconds))
        case "exponential":
            self = .exponential(
                initial: try duration(.initialSeconds),
                multiplier: try container.decode(Double.self, forKey: .multiplier),
                maximum: try duration(.maximumSeconds)
            )
        case let other:
            throw DecodingError.dataCorruptedError(forKey: .kind, in: container, debugDescription: "unknown backoff kind \(other.debugDescription)")
        }
    }

    /// Encodes the kind and its durations in seconds.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .fixed(let delay):
            try container.encode("fixed", forKey: .kind)
            try container.encode(delay.seconds, forKey: .delaySeconds)
        case .linear(let initial, let increment, let maximum):
            try container.encode("linear", forKey: .kind)
            try container.encode(initial.seconds, forKey: .initialSeconds)
            try container.encode(increment.seconds, forKey: .incrementSeconds)
            try container.encode(maximum.seconds, forKey: .maximumSeconds)
        case .exponential(let initial, let multiplier, let maximum):
            try container.encode("exponential", forKey: .kind)
            try container.encode(initial.seconds, forKey: .initialSeconds)
            try container.encode(multiplier, forKey: .multiplier)
            try container.encode(maximum.seconds, forKey: .maximumSeconds)
        }
    }
}

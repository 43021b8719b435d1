/// How often and how soon to try again: a bounded number of retries with fixed, linear or exponential backoff
/// and optional jitter. The executor uses it for version conflicts; the same type serves message redelivery.
public struct RetryPolicy: Sendable, Hashable {
    /// How the delay grows from one retry to the next, before jitter.
    public enum Backoff: Sendable, Hashable {
        /// The same delay before every retry.
        case fixed(Duration)
        /// `initial`, then `initial + increment`, `initial + 2 × increment`, ..., never above `maximum`.
        case linear(initial: Duration, increment: Duration, maximum: Duration)
        /// `initial`, then `initial × multiplier`, `initial × multiplier²`, ..., never above `maximum`.
        case exponential(initial: Duration, multiplier: Double, maximum: Duration)
    }

    /// How many times to retry after the first attempt; 0 means never retry.
    public var maxRetries: Int
    /// How the delay grows.
    public var backoff: Backoff
    /// The fraction of each delay that is random, from 0 (exact delays) to 1 (anywhere between 0 and the delay).
    public var jitter: Double

    /// Creates a policy; `jitter` is clamped to `0...1` and `maxRetries` to at least 0.
    public init(maxRetries: Int, backoff: Backoff, jitter: Double = 0.5) {
        self.maxRetries = max(0, maxRetries)
        self.backoff = backoff
        self.jitter = min(1, max(0, jitter))
    }

    /// The executor's default for version conflicts: up to 12 retries, 2 ms doubling to at most 250 ms, half jitter.
    public static let conflictDefault = RetryPolicy(
        maxRetries: 12,
        backoff: .exponential(initial: .milliseconds(2), multiplier: 2, maximum: .milliseconds(250)),
        jitter: 0.5
    )

    /// Never retry.
    public static let never = RetryPolicy(maxRetries: 0, backoff: .fixed(.zero), jitter: 0)

    /// The most attempts this policy allows, the first one included.
    public var maxAttempts: Int { maxRetries + 1 }

    /// Whether another attempt is allowed after `attempt` attempts failed (`attempt` counts from 1).
    public func allowsRetry(afterAttempt attempt: Int) -> Bool { attempt <= maxRetries }

    /// The delay before retry number `retry` (1 for the first retry) without jitter.
    public func baseDelay(beforeRetry retry: Int) -> Duration {
        let step = max(0, retry - 1)
        switch backoff {
        case .fixed(let delay):
            return delay
        case .linear(let initial, let increment, let maximum):
            return min(maximum, initial + increment * step)
        case .exponential(let initial, let multiplier, let maximum):
            let seconds = initial.seconds * pow(max(1, multiplier), Double(step))
            return seconds >= maximum.seconds ? maximum : .seconds(seconds)
        }
    }

    /// The delay before retry number `retry` (1 for the first), with jitter drawn from `unitRandom` in `0..<1`:
    /// `base × (1 − jitter × unitRandom)`.
    public func delay(beforeRetry retry: Int, unitRandom: Double) -> Duration {
        let base = baseDelay(beforeRetry: retry)
        let factor = 1 - jitter * min(1, max(0, unitRandom))
        return .seconds(base.seconds * factor)
    }
}

extension Duration {
    /// The duration in seconds, as a floating-point number.
    public var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}

/// `base` raised to `exponent` for the small, non-negative exponents of a backoff, without Foundation's `pow`.
private func pow(_ base: Double, _ exponent: Double) -> Double {
    var result = 1.0
    var remaining = Int(exponent)
    while remaining > 0 && result < 1e12 {
        result *= base
        remaining -= 1
    }
    return result
}

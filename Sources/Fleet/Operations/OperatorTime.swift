import Foundation

/// Times as operators type them: ISO 8601 (`2026-03-01T12:00:00Z`, with fractional seconds or an offset, or
/// a date `2026-03-01` meaning its midnight UTC), or an age relative to now (`90s`, `15m`, `2h`, `3d`).
public enum OperatorTime {
    /// The time `text` names, relative ones counted back from `now`.
    /// - Throws: ``OperationsError/Code/invalidArgument`` naming the formats accepted.
    public static func parse(_ text: String, now: Date = Date()) throws(OperationsError) -> Date {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let unit = trimmed.last, let amount = Double(trimmed.dropLast()), amount >= 0 {
            let seconds: Double? = switch unit {
            case "s": amount
            case "m": amount * 60
            case "h": amount * 3600
            case "d": amount * 86_400
            default: nil
            }
            if let seconds { return now.addingTimeInterval(-seconds) }
        }
        for options: ISO8601DateFormatter.Options in [[.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime], [.withFullDate]] {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = options
            if let date = formatter.date(from: trimmed) { return date }
        }
        throw OperationsError(.invalidArgument, "\"\(text)\" is not a time: use ISO 8601 (2026-03-01T12:00:00Z, 2026-03-01) or an age (90s, 15m, 2h, 3d)")
    }
}

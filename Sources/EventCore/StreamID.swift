/// The name of an event stream, such as `account-42` or `order-process-7`.
///
/// A stream id is never empty, holds at most ``maximumLength`` characters and no control characters. Those rules
/// are checked once, here, so every store can rely on them.
public struct StreamID: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The longest stream id accepted, in characters.
    public static let maximumLength = 255

    /// The validated text of the id.
    public let rawValue: String

    /// Validates `rawValue`; throws an ``EventStoreError`` with code ``EventStoreError/Code/invalidStreamID``.
    public init(_ rawValue: String) throws(EventStoreError) {
        if let problem = StreamID.problem(with: rawValue) {
            throw EventStoreError(.invalidStreamID, "invalid stream id \(StreamID.quoted(rawValue)): \(problem)")
        }
        self.rawValue = rawValue
    }

    /// Returns why `candidate` is not a valid stream id, or `nil` if it is one.
    public static func problem(with candidate: String) -> String? {
        if candidate.isEmpty { return "it is empty" }
        let utf8 = candidate.utf8
        if utf8.count <= maximumLength && utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
            // Printable ASCII, the usual case: one character per byte and no control character.
            return nil
        }
        if candidate.count > maximumLength { return "it has \(candidate.count) characters, at most \(maximumLength) are allowed" }
        if candidate.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return "it contains a control character"
        }
        return nil
    }

    /// Escaped and shortened for messages, so a bad id cannot break a log line.
    static func quoted(_ text: String) -> String {
        let shortened = text.count > 64 ? String(text.prefix(64)) + "…" : text
        return shortened.debugDescription
    }

    /// Decodes and validates a stream id stored as a plain string.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do {
            try self.init(text)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
        }
    }

    /// Encodes the id as a plain string.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    /// Orders ids by their text, the order in which stores lock streams.
    public static func < (lhs: StreamID, rhs: StreamID) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The id's text.
    public var description: String { rawValue }
}

import Foundation
import Synchronization

/// The identity of one event: a UUID version 7, so ids sort by creation time.
///
/// Ids made by one process are strictly increasing, even within one millisecond (the 12-bit counter of
/// RFC 9562, method 1). Compare ids with `<` to order them by creation time.
public struct EventID: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The UUID.
    public let uuid: UUID

    /// A new, time-ordered id.
    public init() {
        self.uuid = EventIDGenerator.shared.next()
    }

    /// Wraps an existing UUID (for example one read back from a store).
    public init(uuid: UUID) {
        self.uuid = uuid
    }

    /// Parses the textual form, or returns `nil`.
    public init?(uuidString: String) {
        guard let uuid = UUID(uuidString: uuidString) else { return nil }
        self.uuid = uuid
    }

    /// The creation time held in the id's first 48 bits, to the millisecond.
    public var createdAt: Date {
        let bytes = uuid.uuid
        let millis = [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Date(timeIntervalSince1970: Double(millis) / 1000)
    }

    /// The version nibble of the UUID: 7 for ids made here.
    public var version: Int { Int(uuid.uuid.6 >> 4) }

    /// Byte-wise order, which is creation order for version-7 ids.
    public static func < (lhs: EventID, rhs: EventID) -> Bool {
        withUnsafeBytes(of: lhs.uuid.uuid) { left in
            withUnsafeBytes(of: rhs.uuid.uuid) { right in
                left.lexicographicallyPrecedes(right)
            }
        }
    }

    /// Decodes the textual UUID form.
    public init(from decoder: any Decoder) throws {
        self.uuid = try decoder.singleValueContainer().decode(UUID.self)
    }

    /// Encodes the textual UUID form.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(uuid)
    }

    /// The lower-case textual UUID form.
    public var description: String { uuid.uuidString.lowercased() }
}

/// Makes version-7 UUIDs that increase strictly within this process.
final class EventIDGenerator: Sendable {
    static let shared = EventIDGenerator()

    private struct State {
        var lastMillis: UInt64 = 0
        var counter: UInt16 = 0
    }

    private let state = Mutex(State())

    func next(now: Date = Date()) -> UUID {
        let wallMillis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        let (millis, counter) = state.withLock { state -> (UInt64, UInt16) in
            if wallMillis > state.lastMillis {
                state.lastMillis = wallMillis
                // Start low in the 12-bit space so many ids fit in the same millisecond.
                state.counter = UInt16.random(in: 0..<0x400)
            } else if state.counter < 0xFFF {
                state.counter += 1
            } else {
                // Counter exhausted: borrow the next millisecond so the order still holds.
                state.lastMillis += 1
                state.counter = 0
            }
            return (state.lastMillis, state.counter)
        }
        var random = SystemRandomNumberGenerator()
        let tail = random.next() as UInt64
        var bytes = [UInt8](repeating: 0, count: 16)
        for index in 0..<6 { bytes[index] = UInt8(truncatingIfNeeded: millis >> (8 * (5 - index))) }
        bytes[6] = 0x70 | UInt8(truncatingIfNeeded: counter >> 8)
        bytes[7] = UInt8(truncatingIfNeeded: counter)
        for index in 8..<16 { bytes[index] = UInt8(truncatingIfNeeded: tail >> (8 * (15 - index))) }
        bytes[8] = 0x80 | (bytes[8] & 0x3F)
        return UUID(uuid: (
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
            bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]
        ))
    }
}

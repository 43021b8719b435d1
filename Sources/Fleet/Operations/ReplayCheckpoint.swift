import Foundation

/// Where a store replay stands: the global position of the last event the broker confirmed, with the
/// selection and target it belongs to, so a second run with the same file continues after it.
public struct ReplayCheckpoint: Sendable, Hashable, Codable {
    /// The events replayed.
    public var selection: StoreReplaySelection
    /// Where they go.
    public var target: ReplayTarget
    /// The global position of the last confirmed event; every selected event up to it was confirmed.
    public var lastConfirmedPosition: Int
    /// Events confirmed over every run with this file.
    public var published: Int
    /// Whether the last run reached the end of the selection.
    public var finished: Bool
    /// When the file was written.
    public var updatedAt: Date

    /// A checkpoint.
    public init(selection: StoreReplaySelection, target: ReplayTarget, lastConfirmedPosition: Int, published: Int,
                finished: Bool, updatedAt: Date = Date()) {
        self.selection = selection
        self.target = target
        self.lastConfirmedPosition = lastConfirmedPosition
        self.published = published
        self.finished = finished
        self.updatedAt = updatedAt
    }

    /// The checkpoint in `url`, or nil when there is no such file.
    /// - Throws: ``OperationsError/Code/checkpointMismatch`` when the file is not a checkpoint.
    public static func load(from url: URL) throws(OperationsError) -> ReplayCheckpoint? {
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do {
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            return try decoder.decode(ReplayCheckpoint.self, from: Data(contentsOf: url))
        } catch {
            throw OperationsError(.checkpointMismatch, "\(url.path) is not a replay checkpoint: \(error)")
        }
    }

    /// Writes the checkpoint to `url` atomically (a temporary file renamed over it), so a reader, or a run
    /// interrupted while it writes, sees the old or the new checkpoint, never a part of one.
    public func write(to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try encoder.encode(self).write(to: url, options: .atomic)
    }
}

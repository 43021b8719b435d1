import Foundation

/// The JSON form of a stream-to-version map that stores keep with an idempotency key.
public enum StreamVersionsCoding {
    /// The JSON text of `versions` (keys sorted, so equal maps give equal text).
    public static func encode(_ versions: [StreamID: Int]) throws(EventStoreError) -> String {
        let plain = Dictionary(uniqueKeysWithValues: versions.map { ($0.key.rawValue, $0.value) })
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        guard let data = try? encoder.encode(plain), let text = String(data: data, encoding: .utf8) else {
            throw EventStoreError(.encodingFailed, "stream versions could not be encoded")
        }
        return text
    }

    /// The map `encode` wrote; a text that is not one is a corrupted record.
    public static func decode(_ text: String) throws(EventStoreError) -> [StreamID: Int] {
        guard let plain = try? JSONDecoder().decode([String: Int].self, from: Data(text.utf8)) else {
            throw EventStoreError(.corruptedRecord, "the stream versions recorded with an idempotency key cannot be read")
        }
        var versions: [StreamID: Int] = [:]
        for (stream, version) in plain {
            guard let id = try? StreamID(stream) else {
                throw EventStoreError(.corruptedRecord, "a stream id recorded with an idempotency key is invalid")
            }
            versions[id] = version
        }
        return versions
    }
}

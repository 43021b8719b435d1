import EventCore

/// Derives the stream of a process instance from the business id it is about, so every worker that sees an
/// event for order `42` lands on the same stream, `order-fulfillment-42`, without a lookup.
public enum ProcessID {
    /// `<processType>-<businessID>`, validated as a ``StreamID``.
    ///
    /// - Throws: ``EventStoreError/Code/invalidStreamID`` when the business id is empty or the result is not a
    ///   valid stream id (too long, control characters).
    public static func derive(processType: String, businessID: String) throws(EventStoreError) -> StreamID {
        guard !businessID.isEmpty else {
            throw EventStoreError(.invalidStreamID, "a process needs a non-empty business id")
        }
        return try StreamID("\(processType)-\(businessID)")
    }
}

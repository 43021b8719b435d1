@testable import AMQP
import Testing

/// Acknowledgements handed over in one round are sent as one `multiple` acknowledgement when they continue
/// the run of settled deliveries, and one by one otherwise; the `multiple` target is never a tag settled before
/// (the broker closes the channel with "unknown delivery tag" for that).
@Suite("Coalesced acknowledgements")
struct AcknowledgementBufferTests {
    @Test func aContiguousRunIsOneMultipleAcknowledgement() {
        var buffer = AcknowledgementBuffer()
        buffer.pending = [3, 1, 2]
        let (through, singles) = buffer.drain()
        #expect(through == 3)
        #expect(singles.isEmpty)
        #expect(buffer.settledThrough == 3)
    }

    @Test func aGapSendsTheLaterOnesAloneAndTheRunNeverTargetsThemAgain() {
        var buffer = AcknowledgementBuffer()
        buffer.pending = [3, 4]
        var (through, singles) = buffer.drain()
        #expect(through == nil)
        #expect(singles == [3, 4])
        buffer.pending = [1, 2]
        (through, singles) = buffer.drain()
        // 3 and 4 were acknowledged alone: the multiple acknowledgement must stop at 2.
        #expect(through == 2)
        #expect(singles.isEmpty)
        #expect(buffer.settledThrough == 4)
        buffer.pending = [5]
        (through, singles) = buffer.drain()
        #expect(through == 5)
    }

    @Test func rejectedAndNackedDeliveriesCloseGaps() {
        var buffer = AcknowledgementBuffer()
        buffer.settledOutOfOrder(1)
        buffer.pending = [2, 3]
        let (through, singles) = buffer.drain()
        #expect(through == 3)
        #expect(singles.isEmpty)
        buffer.settled(through: 10)
        #expect(buffer.settledThrough == 10)
        buffer.pending = [7]
        let (late, lateSingles) = buffer.drain()
        #expect(late == nil)
        #expect(lateSingles.isEmpty)
    }

    @Test func aMultipleAcknowledgementFromTheApplicationDropsWhatItCovers() {
        var buffer = AcknowledgementBuffer()
        buffer.pending = [2, 5]
        buffer.settled(through: 4)
        let (through, singles) = buffer.drain()
        #expect(through == 5)
        #expect(singles.isEmpty)
    }
}

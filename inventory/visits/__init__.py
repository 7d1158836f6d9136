"""After the booking: visits checked in or missed (签到, 爽约), and the no-show rule."""
